"""The composition root: everything a run needs is built here, in one place and one order.

check_run(cfg): the schema and every group's arguments (before anything is written). build_run(cfg): threads
-> device / process group -> seed -> data -> model -> FLOPs count -> optimizer -> lr schedule -> loss ->
sparsify() -> loggers, and the recipe the run records. prepare(cfg, run_dir): the built run in its run dir
(resumed from its checkpoint, or checked to be fresh; .hydra/ recorded; metrics and loggers opened) as a
Trainer, which only runs the loop. Every value error on the way becomes a UserError naming the config key.
Used by the CLI, scripts/bench.py and the tests.
"""
import logging
import math
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dst_cli import distributed
from dst_cli.checkpoint import load_checkpoint
from dst_cli.data import Data, LoaderSettings
from dst_cli.data.user import wrap_datasets
from dst_cli.errors import UserError
from dst_cli.loggers import Logger
from dst_cli.lr_schedules import LRSchedule
from dst_cli.machine import resolve_threads
from dst_cli.methods import method_label
from dst_cli.metrics import MetricsLog
from dst_cli.plugins import check_arguments, instantiate, locate, node_arguments, signature_node
from dst_cli.rundir import RunDir
from dst_cli.schema import GROUP_OFFERS, RESULT_NEUTRAL_KEYS, check_config, option_node, option_sources
from dst_cli.sparse import SparseConfigError, SparseEngine, layer_flops, sparsify
from dst_cli.train import Trainer

log = logging.getLogger("dst_cli")
CHECK_TOTAL_STEPS = 10**9  # stands in for the run's length when a schedule is checked before the data is read
LABELLED_GROUPS = ("model", "dataset", "acq", "schedule", "init", "optim", "lr_schedule")


@dataclass
class Run:
    """Everything a run trains with; `forward_model` is `model` behind DDP and/or torch.compile."""

    dist: distributed.Context
    device: torch.device
    threads: int
    threads_choice: str  # why that many (trainer.threads=auto decides by the step's work)
    bf16: bool
    memory_format: torch.memory_format
    data: Data
    model: nn.Module
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: LRSchedule
    peak_lrs: list[float]  # each param group's lr as configured: the lr schedule's factor multiplies it
    criterion: nn.Module
    engine: SparseEngine
    layer_flops: dict[str, int]
    steps_per_epoch: int
    total_steps: int
    loggers: dict[str, Logger]
    recipe: dict  # the resolved config: what the run records and compares on resume
    labels: dict[str, str]  # how reports name the run's model, dataset, acq, ..., and its method


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    return torch.device(name)


def resolve_switch(value: str | bool, device: torch.device) -> bool:
    """`auto` means on for CUDA, off for CPU."""
    return device.type == "cuda" if value == "auto" else bool(value)


def resolve_compile(value: str | bool, device: torch.device, distributed: bool) -> str | bool:
    """trainer.compile `auto`: CUDA graphs (reduce-overhead) on a single CUDA device, where the host's kernel
    launches bound the step; eager on CPU (nothing to gain) and under DDP (not verified with graphs). The
    training batches all have one shape (the last incomplete one is dropped) and the eval pass runs the eager
    model, so nothing recompiles per step; mask updates change the weights in place, which graph replays read."""
    if value != "auto":
        return value
    return "reduce-overhead" if device.type == "cuda" and not distributed else False


def check_run(cfg: DictConfig) -> dict:
    """Every value error that can be found without data: the schema, the sparse options, and each group's
    arguments (the cheap groups are built on stand-ins). Called before anything is written; returns the sparse
    options with their conventions resolved."""
    layout = check_config(cfg)
    for group in ("model", "dataset"):
        check_arguments(group, locate(group, cfg[group]._target_), node_arguments(cfg[group]),
                        dict.fromkeys(GROUP_OFFERS[group]))
    instantiate("acq", cfg.acq)
    instantiate("init", cfg.init)
    instantiate("schedule", cfg.schedule, total_steps=CHECK_TOTAL_STEPS)
    instantiate("lr_schedule", cfg.lr_schedule, epochs=cfg.trainer.epochs, steps_per_epoch=1)
    check_learning_rate(cfg.optim)
    instantiate("optim", cfg.optim, params=[nn.Parameter(torch.zeros(1))])
    for name, node in cfg.logger.items():
        instantiate(f"logger.{name}", node)
    return layout


def check_learning_rate(node: Mapping) -> None:
    """optim.lr, when the optimizer has one, is a finite number > 0 (torch takes inf and fails steps later)."""
    lr = node.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise UserError(f"optim.lr={lr} is invalid; allowed: a finite number > 0")


def build_data(node: Mapping, settings: LoaderSettings) -> Data:
    """The loaders of a dataset node for one rank (a callable returning Datasets gets the built-ins' loaders).
    A file the builder cannot read (no permission, a dangling link) is a UserError naming it."""
    try:
        made = instantiate("dataset", node, settings=settings)
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise UserError(f"dataset: cannot read{where} ({error.strerror or error})") from None
    return made if isinstance(made, Data) else wrap_datasets(made, settings)


def build_model(node: Mapping, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A freshly initialised model from a model node; input_shape is the shape of one example."""
    model = instantiate("model", node, num_classes=num_classes, input_shape=tuple(input_shape))
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_={node['_target_']} returned {type(model).__name__}; allowed: an nn.Module")
    return model


def init_inputs(init, criterion: nn.Module, data: Data, memory_format: torch.memory_format) -> dict:
    """A scored initial topology reads the first init.num_batches training batches and the loss."""
    if not init.num_batches:
        return {}
    batches = [(x.contiguous(memory_format=memory_format), y)
               for _, (x, y) in zip(range(init.num_batches), data.train.batches(0))]
    return {"loss_fn": criterion, "batches": batches}


def build_run(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> Run:
    """The run of config `cfg`; `choices`: the group options Hydra picked (names the run in reports)."""
    layout = check_run(cfg)
    dist = distributed.start(resolve_device(cfg.trainer.device))
    device = dist.device
    torch.manual_seed(cfg.seed)
    settings = LoaderSettings(cfg.trainer.batch_size, cfg.trainer.eval_batch_size, cfg.seed, device,
                              dist.rank, dist.world_size)
    data = build_data(cfg.dataset, settings)
    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise UserError(f"trainer.batch_size={cfg.trainer.batch_size} is larger than the training set; "
                        "allowed: at most the number of training samples")
    bf16 = resolve_switch(cfg.trainer.bf16, device)
    channels_last = resolve_switch(cfg.trainer.channels_last, device) and len(data.input_shape) == 3  # images only
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg.model, data.num_classes, data.input_shape).to(device, memory_format=memory_format)
    flops = layer_flops(model, tuple(data.input_shape))
    # set once the step's work is known (the data and the model are built alike on any number of threads)
    threads, threads_choice = resolve_threads(cfg.trainer.threads, 3 * sum(flops.values()) * cfg.trainer.batch_size)
    torch.set_num_threads(threads)
    forward_model = model
    if dist.distributed:
        forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    compile_mode = resolve_compile(cfg.trainer.compile, device, dist.distributed)
    if compile_mode:
        forward_model = torch.compile(forward_model, mode=None if compile_mode is True else compile_mode)
    optimizer = instantiate("optim", cfg.optim, params=model.parameters())
    lr_schedule = instantiate("lr_schedule", cfg.lr_schedule, epochs=cfg.trainer.epochs,
                              steps_per_epoch=steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)
    total_steps = cfg.trainer.epochs * steps_per_epoch
    init = instantiate("init", cfg.init)
    try:
        engine = sparsify(
            model, optimizer, sparsity=layout["sparsity"], total_steps=total_steps, acq=instantiate("acq", cfg.acq),
            distribution=layout["distribution"], dense_first_layer=layout["dense_first_layer"],
            dense_last_layer=layout["dense_last_layer"], seed=layout["seed"], backend=layout["backend"],
            schedule=instantiate("schedule", cfg.schedule, total_steps=total_steps),
            init=init, init_options=init_inputs(init, criterion, data, memory_format),
        )
    except SparseConfigError as error:
        message = " ".join(str(error).split())
        raise UserError(message if message.startswith(error.key) else f"{error.key}: {message}") from None
    loggers = {name: instantiate(f"logger.{name}", node) for name, node in cfg.logger.items()}
    recipe = resolved_recipe(cfg, layout, threads=threads, device=device.type, bf16=bf16, channels_last=channels_last,
                             compile=compile_mode)
    return Run(dist, device, threads, threads_choice, bf16, memory_format, data, model, forward_model, optimizer, lr_schedule,
               [group["lr"] for group in optimizer.param_groups], criterion, engine, flops, steps_per_epoch,
               total_steps, loggers, recipe, run_labels(cfg, choices or {}))


def resolved_recipe(cfg: DictConfig, layout: dict, **trainer: object) -> dict:
    """The config as it ran: every interpolation resolved, the values `auto` / null stood for, and every
    argument a group's callable took by default (a node of a user's YAML option may list only some)."""
    recipe = OmegaConf.to_container(cfg, resolve=True)
    recipe.pop("hydra", None)
    recipe.update({key: layout[key] for key in ("dense_first_layer", "dense_last_layer")})
    recipe["trainer"].update(trainer)
    nodes = [(group, recipe[group]) for group in GROUP_OFFERS if group != "logger"]
    nodes += [("logger", node) for node in recipe["logger"].values()]
    for group, node in nodes:
        defaults = signature_node(locate(group, node["_target_"]), GROUP_OFFERS[group], path=node["_target_"])
        node.update({key: value for key, value in defaults.items() if key not in node})
    return recipe


def option_label(group: str, node: Mapping, choice: str | None) -> str:
    """The option's name as chosen (`acq=ee`); without a choice (a config built outside dst-train), the
    built-in option with the node's _target_ that differs from it in the fewest keys (a schedule preset with
    one field changed is still that preset); else the last part of its _target_ (`optim._target_=
    torch.optim.Adam`: Adam)."""
    if choice and "." not in choice:
        return choice
    plain_node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    differences = {}
    for name, (target, overrides) in option_sources()[group].items():
        option = option_node(group, target, overrides)
        if option["_target_"] == plain_node["_target_"]:
            differences[name] = sum(option.get(key) != plain_node.get(key) for key in {*option, *plain_node})
    if differences:
        return min(differences, key=differences.get)
    return str(plain_node["_target_"]).rsplit(".", 1)[-1].removeprefix("build_")


def run_labels(cfg: DictConfig, choices: Mapping[str, str]) -> dict[str, str]:
    labels = {group: option_label(group, cfg[group], choices.get(group)) for group in LABELLED_GROUPS}
    labels["method"] = method_label(labels["acq"], labels["schedule"], labels["init"], cfg.sparsity)
    return labels


def git_commit() -> str | None:
    """The commit of the dst_cli source when it runs from a git checkout (an editable install), with "-dirty"
    when tracked files differ from it; else None."""
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=40"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def versions() -> dict:
    return {"dst_cli": version("dst-cli"), "torch": torch.__version__, "python": sys.version.split()[0],
            "git_commit": git_commit()}


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs, except RESULT_NEUTRAL_KEYS."""
    changes = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if path in RESULT_NEUTRAL_KEYS:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            changes += config_changes(before, after, path + ".")
        elif before != after:
            changes.append(f"{path}: {before} -> {after}")
    return changes


def prepare(cfg: DictConfig, run_dir: Path | RunDir, record: Callable[[dict], None] | None = None,
            choices: Mapping[str, str] | None = None, overrides: list[str] | None = None) -> Trainer:
    """The run of `cfg` in `run_dir`, ready to train: resumed from checkpoints/last.pt when there is one (same
    recipe required), else checked to start fresh; then (rank 0) the dir created, `record(recipe)` called (the
    .hydra/ record), metrics.jsonl and the loggers opened. Nothing is written before the resume is accepted."""
    paths = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run = build_run(cfg, choices)
    state = load_checkpoint(paths.last_checkpoint, run.device) if paths.last_checkpoint.exists() else None
    if state is not None:
        changed = config_changes(state["config"], run.recipe)
        if changed:
            raise UserError(f"{paths.path} holds a checkpoint of a different config ({'; '.join(changed)}); "
                            "use a new run dir or the same overrides")
    else:
        paths.check_can_start_fresh()
    trainer = Trainer(run, paths, versions(), overrides or [])
    if state is not None:
        try:
            run.engine.check_state(state["sparse"])  # before the model and optimizer are loaded: all or nothing
            trainer.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:  # another model's, or damaged
            reason = " ".join(str(error).split())[:300]
            raise UserError(f"{paths.last_checkpoint} does not fit this run ({type(error).__name__}: {reason}); "
                            "use a new run dir") from None
    if run.dist.is_main:
        paths.path.mkdir(parents=True, exist_ok=True)
        if record is not None:
            record(run.recipe)
        covered = state["metrics"] if state is not None else None
        metrics = MetricsLog(paths.metrics, keep_epochs=trainer.epoch, covered=covered)
        if metrics.restored:
            log.warning("%s: the rows of epochs %s were torn or missing; appended them again from %s", paths.metrics,
                        ", ".join(map(str, metrics.restored)), paths.last_checkpoint)
        trainer.open_files(metrics, resumed=state is not None)
    return trainer


def train(cfg: DictConfig, run_dir: Path | RunDir, **options) -> dict:
    """Build, prepare and train the run of `cfg` in `run_dir`; the summary (rank 0) or {}."""
    return prepare(cfg, run_dir, **options).run()

