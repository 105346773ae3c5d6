"""sparsify(): make a model's prunable weights sparse and return the engine that trains them."""
from collections.abc import Callable

import torch
from torch import nn

from dst_cli.sparse.acquisition import Acquisition, make_acquisition
from dst_cli.sparse.distribution import DISTRIBUTIONS, Distribution, active_counts, layer_densities
from dst_cli.sparse.engine import BACKENDS, DDP_MODES, Backend, DDPMode, SparseEngine
from dst_cli.sparse.errors import (
    SparseConfigError, check_bool, check_choice, check_int, check_number, invalid,
)
from dst_cli.sparse.init import INIT_INPUTS, Init, check_counts, make_init
from dst_cli.sparse.prunable import is_prunable, prunable_weights
from dst_cli.sparse.schedule import UpdateSchedule, resolve_schedule


def sparsify(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    sparsity: float,
    total_steps: int,
    acq: "str | type[Acquisition] | Acquisition" = "ee",
    acq_options: dict | None = None,
    distribution: Distribution = "erk",
    dense_first_layer: bool | None = None,
    dense_last_layer: bool | None = None,
    schedule: "str | UpdateSchedule" = "itop",
    prunable: Callable[[str, nn.Module], bool] | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    ddp: DDPMode = "check",
    init: "str | type[Init] | Init" = "random",
    init_options: dict | None = None,
    backend: Backend = "masked",
    **schedule_overrides,
) -> SparseEngine:
    """Mask `sparsity` of the prunable weights of `model` and return the engine; call `engine.step()` after
    each `loss.backward()` instead of `optimizer.step()`.

    total_steps: calls of engine.step() in the whole run (e.g. len(loader) * epochs).
    acq: a registered name (acquisition_names()), an Acquisition subclass (built with acq_options) or instance.
    distribution: erk | er | uniform. dense_first_layer: None = the distribution's convention (uniform: dense,
        and every other layer at exactly 1 - sparsity, as in RigL; erk/er: sparse); dense_last_layer: None =
        sparse for every distribution (RigL's convention too); True / False force either. schedule: a preset name (SCHEDULE_PRESETS) or an UpdateSchedule; any
        UpdateSchedule field may be overridden by keyword (update_interval=100, rounding="int", ...).
    prunable(name, module) -> bool picks the sparse modules (default is_prunable: Conv1d/2d/3d and Linear).
    seed / generator: the random masks and random growth (use the same seed on every rank).
    ddp: under torch.distributed with several ranks, "check" the masks agree after each update
        (MasksDiverged if not) or "broadcast" rank 0's masks.
    backend: how the sparse layers compute. "masked" (default): dense kernels on masked weights, on any device,
        bit-reproducible. "sparse": Conv1d/Conv2d/Linear run forward and backward on their active weights only
        (dst_cli.sparse.backend, C++ kernels, CPU, float32); the steps whose update reads the dense gradient
        (rigl, ee) run masked; SparseConfigError where it cannot run (not built, no AVX2, CUDA, snfs, DDP).
        "auto": per layer the faster of the two, timed at its first forward (where the sparse path cannot
        run: all masked, the reason in engine.compute_reason). The masks, counts, drop and grow choices do
        not depend on it; the sums run in another order, so the numbers differ in the last bits.
    init: the starting topology: a registered name (random | snip | grasp | synflow, dst_cli.sparse.init), an Init
        subclass or instance. init_options: the init's own options (SynFlow's iterations, GraSP's temperature,
        num_batches) and the inputs of a scored init: loss_fn(outputs, targets) and batches [(inputs,
        targets), ...] for snip and grasp, batches (only the first inputs' shape is read) for synflow.
        Scored inits cut all sparse layers globally: a layer's count follows from its mask.
    An acquisition may default some schedule fields (acq=dsr: regrow_dropped=False) when `schedule` is a
    preset name and the field is not given.
    Every bad argument raises SparseConfigError naming it and what is allowed; nothing is changed then.
    """
    if not isinstance(model, nn.Module):
        raise invalid("model", type(model).__name__, "an nn.Module")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise invalid("optimizer", type(optimizer).__name__, "a torch.optim.Optimizer")
    layout = check_layout(sparsity=sparsity, distribution=distribution, dense_first_layer=dense_first_layer,
                          dense_last_layer=dense_last_layer, seed=seed, ddp=ddp, backend=backend)
    check_int("total_steps", total_steps, 1)
    if acq_options is not None and not isinstance(acq_options, dict):
        raise invalid("acq_options", acq_options, "a dict of the acquisition's options, or None")
    acquisition = make_acquisition(acq, **(acq_options or {}))
    if not isinstance(schedule, (str, UpdateSchedule)):
        raise invalid("schedule", schedule, "a preset name or an UpdateSchedule")
    if isinstance(schedule, str):
        schedule_overrides = {**acquisition.schedule_defaults, **schedule_overrides}
    update_schedule = resolve_schedule(schedule, total_steps, schedule_overrides)
    density = 1.0 - layout["sparsity"]
    start_density = density
    if update_schedule.initial_density is not None:
        start_density = check_number("schedule.initial_density", update_schedule.initial_density, density, 1.0)
    if init_options is not None and not isinstance(init_options, dict):
        raise invalid("init_options", init_options, "a dict of the init's options and inputs, or None")
    inputs = {key: value for key, value in (init_options or {}).items() if key in INIT_INPUTS}
    initial_topology = make_init(init, **{key: value for key, value in (init_options or {}).items()
                                          if key not in INIT_INPUTS})
    if prunable is not None and not callable(prunable):
        raise invalid("prunable", prunable, "a function (name, module) -> bool, or None")
    weights = prunable_weights(model, prunable or is_prunable)
    if not weights:
        raise SparseConfigError("prunable", "the model has no prunable weights; allowed: a model with Conv1d/2d/3d "
                                "or Linear layers, or a `prunable` that selects some")
    device = next(iter(weights.values())).device
    if generator is None:
        generator = torch.Generator(device).manual_seed(seed)
    elif not isinstance(generator, torch.Generator) or generator.device.type != device.type:
        raise invalid("generator", generator, f"a torch.Generator on the weights' device ({device.type}), or None")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, w in weights.items() if id(w) not in held]
    if missing:
        raise SparseConfigError("optimizer", f"the optimizer does not hold the prunable weights {missing}; "
                                "allowed: an optimizer over the model's parameters")
    names = list(weights)
    dense = {names[0]} if layout["dense_first_layer"] else set()
    if layout["dense_last_layer"]:
        dense.add(names[-1])
    shapes = {name: tuple(w.shape) for name, w in weights.items()}
    densities = layer_densities(shapes, start_density, distribution, frozenset(dense))
    counts = active_counts(shapes, densities)
    check_counts(weights, counts)
    masks = initial_topology.masks(weights, counts, generator=generator, model=model,
                                   loss_fn=inputs.get("loss_fn"), batches=inputs.get("batches"))
    engine = SparseEngine(weights, optimizer, masks, update_schedule, acquisition, generator, ddp,
                          dense_layers=frozenset(dense), final_density=density, init=initial_topology,
                          distribution=distribution)
    engine.use_backend(model, backend)
    return engine


def check_layout(*, sparsity: float, distribution: str, dense_first_layer: bool | None,
                 dense_last_layer: bool | None, seed: int, ddp: str, backend: str) -> dict:
    """sparsify's scalar options checked, with the conventions resolved: dense_first_layer None is True for
    `uniform` (RigL) and False otherwise, dense_last_layer None is False. Raises SparseConfigError."""
    check_number("sparsity", sparsity, 0.0, 1.0, high_open=True)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    if dense_first_layer is None:
        dense_first_layer = distribution == "uniform"
    if dense_last_layer is None:
        dense_last_layer = False
    check_bool("dense_first_layer", dense_first_layer)
    check_bool("dense_last_layer", dense_last_layer)
    check_int("seed", seed, 0, 2**64 - 1)
    check_choice("ddp", ddp, DDP_MODES)
    check_choice("backend", backend, BACKENDS)
    return {"sparsity": float(sparsity), "distribution": distribution, "dense_first_layer": dense_first_layer,
            "dense_last_layer": dense_last_layer, "seed": int(seed), "ddp": ddp, "backend": backend}
