"""The starting topology: which weights are active before training (`init=random|snip|grasp|synflow`).

`random` keeps, in every layer, the number of weights the distribution gives it, at random (the engine's
`masks.random_mask`: one torch.rand per layer, in module order). `snip`, `grasp` and `synflow` score every
weight and keep the highest scores across all sparse layers with one global cut, as their reference code
does; the distribution then sets only the total budget and which layers stay dense, and the per-layer
counts follow from the returned masks (a layer may end with very few or no weights, as in the references).

Conventions shared by the three scoring methods:
- a layer whose count equals its size (dense_first_layer / dense_last_layer, or made dense by ERK) stays
  dense and does not compete; the others share the budget sum(counts[sparse layers]) exactly;
- ties are broken by a stable sort: the earlier layer (module order) and the earlier position win;
- the model is scored in eval mode (Synaptic-Flow prune.py:9-12, SNIP's `is_train=False`), and nothing of
  it is modified: gradients are taken with torch.autograd.grad (no `.grad` is written), SynFlow works on
  |copies| through torch.func.functional_call, and every module's train/eval flag is restored.
"""
import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dst_cli.sparse.errors import SparseConfigError, check_int, check_number
from dst_cli.sparse.masks import random_mask
from dst_cli.sparse.registry import Registry, options_repr

INIT_INPUTS = ("loss_fn", "batches")  # what a scored init reads from the training setup (init_masks' inputs)

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


class Init:
    """An initial topology. Subclass, override `scores_masks`, register with @register_init("name"); options
    are keyword arguments of __init__ (check them there, raising SparseConfigError(key="init.<opt>")).

    `num_batches`: how many training batches the method reads (0: none; synflow reads only the first
    batch's shape)."""

    name: str = ""
    num_batches: int = 0
    needs_loss = False  # the scores need loss_fn (snip, grasp)

    def masks(self, weights: dict[str, Tensor], counts: dict[str, int], *, generator: torch.Generator | None,
              model: nn.Module | None, loss_fn: LossFn | None, batches: Iterable[Batch] | None) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define masks")

    def __repr__(self) -> str:
        return options_repr(self)


INITS: Registry[Init] = Registry("init", Init)
register_init = INITS.register  # class decorator: make a subclass available as init=NAME


@register_init("random")
class RandomInit(Init):
    """Each layer's active weights drawn uniformly at random (one torch.rand per layer, in module order)."""

    def masks(self, weights, counts, *, generator, model=None, loss_fn=None, batches=None):
        if generator is None:
            raise SparseConfigError("init", "init=random needs a generator")
        return {name: random_mask(weight, counts[name], generator) for name, weight in weights.items()}


class GlobalCutInit(Init):
    """A scored init: every sparse layer's weights compete in one global cut of sum(counts) (see the module
    docstring); layers whose count equals their size stay dense and do not compete."""

    def masks(self, weights, counts, *, generator=None, model=None, loss_fn=None, batches=None):
        needs = {"model": model, "batches": batches} | ({"loss_fn": loss_fn} if self.needs_loss else {})
        missing = [name for name, value in needs.items() if value is None]
        if missing:
            raise SparseConfigError("init", f"init={self.name} needs {', '.join(missing)}; allowed: pass them "
                                    "in init_options")
        dense = {name for name, weight in weights.items() if counts[name] == weight.numel()}
        sparse_weights = {name: weight for name, weight in weights.items() if name not in dense}
        budget = sum(counts[name] for name in sparse_weights)
        with eval_mode(model):
            masks = self.sparse_masks(model, weights, sparse_weights, budget, loss_fn, batches)
        return {name: masks[name] if name in masks else full_mask(weights[name]) for name in weights}

    def sparse_masks(self, model, weights, sparse_weights, budget, loss_fn, batches) -> dict[str, Tensor]:
        raise NotImplementedError


@register_init("snip")
class SNIP(GlobalCutInit):
    """SNIP (Lee et al., ICLR 2019): keep the weights with the largest |w * dL/dw| on the first training
    batch(es).

    num_batches: training batches scored (1 in the paper)
    """

    needs_loss = True

    def __init__(self, num_batches: int = 1):
        self.num_batches = check_int("init.num_batches", num_batches, 1)

    def sparse_masks(self, model, weights, sparse_weights, budget, loss_fn, batches):
        return keep_highest(checked_finite(self.name, snip_scores(model, sparse_weights, loss_fn, batches)), budget)


@register_init("grasp")
class GraSP(GlobalCutInit):
    """GraSP (Wang et al., ICLR 2020): keep the weights whose removal least reduces the gradient flow.

    num_batches: training batches scored
    temperature: GraSP's T, which divides the logits (200 in its code)
    """

    needs_loss = True

    def __init__(self, num_batches: int = 1, temperature: float = 200.0):
        self.num_batches = check_int("init.num_batches", num_batches, 1)
        self.temperature = check_number("init.temperature", temperature, 0.0, low_open=True)

    def sparse_masks(self, model, weights, sparse_weights, budget, loss_fn, batches):
        scores = grasp_scores(model, sparse_weights, loss_fn, batches, self.temperature)
        return keep_highest(checked_finite(self.name, scores), budget)


@register_init("synflow")
class SynFlow(GlobalCutInit):
    """SynFlow (Tanaka et al., NeurIPS 2020): iterative, data-free synaptic-flow scores; only the first
    batch's input shape is read.

    iterations: pruning rounds (100 in the paper)
    """

    num_batches = 1

    def __init__(self, iterations: int = 100):
        self.iterations = check_int("init.iterations", iterations, 1)

    def sparse_masks(self, model, weights, sparse_weights, budget, loss_fn, batches):
        first_inputs = next(iter(batches))[0]
        return synflow_masks(model, weights, sparse_weights, budget, first_inputs, self.iterations)


def init_names() -> list[str]:
    return INITS.names()


def make_init(init: "str | type[Init] | Init", **options) -> Init:
    """An init from a registered name or a class (with its options), or an instance as it is."""
    return INITS.make(init, options)


def init_masks(
    init: "str | type[Init] | Init",
    weights: dict[str, Tensor],
    counts: dict[str, int],
    *,
    generator: torch.Generator | None = None,
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batches: Iterable[Batch] | None = None,
    **options,
) -> dict[str, Tensor]:
    """Boolean masks (shape and memory format of each weight) with exactly sum(counts) active weights.

    weights: the prunable weights, `prunable_weights(model)`; counts: active weights per layer from the
    distribution. `random` needs `generator`; `snip` and `grasp` need `model`, `loss_fn` and `batches`
    (an iterable of (inputs, targets), used whole: one batch for classic SNIP); `synflow` needs `model` and
    `batches`, of which it reads only the shape and dtype of the first inputs (it is data-free).
    `options`: the init's own options (SynFlow's `iterations`, GraSP's `temperature`, ...).
    """
    method = make_init(init, **options)
    check_counts(weights, counts)
    return method.masks(weights, counts, generator=generator, model=model, loss_fn=loss_fn, batches=batches)


def check_counts(weights: dict[str, Tensor], counts: dict[str, int]) -> None:
    if set(counts) != set(weights):
        raise SparseConfigError("init", f"counts name {sorted(set(counts) ^ set(weights))}, not the weights' layers")
    for name, weight in weights.items():
        check_int(f"counts[{name}]", counts[name], 0, weight.numel())


def snip_scores(model: nn.Module, weights: dict[str, Tensor], loss_fn: LossFn, batches: Iterable[Batch]) -> dict[str, Tensor]:
    """SNIP (Lee et al., ICLR 2019): connection sensitivity |dL/dw * w|, L summed over `batches`.

    snip-public snip/model.py:62-70 (|dL/dc| at c = 1, i.e. |g * w|), :172-185 (global top-k); Synaptic-Flow
    Pruners/pruners.py:104-131. The references divide by the sum of all scores, which leaves the order as is.
    """
    grads = summed_grads(model, weights, loss_fn, batches, create_graph=False)
    return {name: (grad * weight.detach()).abs() for (name, weight), grad in zip(weights.items(), grads)}


def grasp_scores(
    model: nn.Module, weights: dict[str, Tensor], loss_fn: LossFn, batches: Iterable[Batch], temperature: float
) -> dict[str, Tensor]:
    """GraSP (Wang et al., ICLR 2020): w * Hg, keep the highest (the code removes the highest of -w * Hg).

    g = dL/dw with the logits divided by `temperature`, summed over `batches` and held constant; Hg is the
    gradient of g . dL/dw (one Hessian-gradient product per batch, summed). alecwangcq/GraSP
    pruner/GraSP.py:89-107 (g), :117-134 (Hg), :140 (-w * Hg), :148-155 (keep the lowest);
    Synaptic-Flow Pruners/pruners.py:135-175. Not reproduced: GraSP.py:64-65 re-initialises the Linear
    layers of its scoring copy with Xavier normal; we score the model's own weights.
    """
    batches = list(batches)
    scaled_loss = lambda outputs, targets: loss_fn(outputs / temperature, targets)  # noqa: E731
    gradient = [g.detach() for g in summed_grads(model, weights, scaled_loss, batches, create_graph=False)]
    hessian_gradient = [torch.zeros_like(g) for g in gradient]
    params = list(weights.values())
    for inputs, targets in on_device(batches, params[0].device):
        grads = torch.autograd.grad(
            scaled_loss(model(inputs), targets), params, create_graph=True, allow_unused=True, materialize_grads=True
        )
        projection = sum((g * d).sum() for g, d in zip(gradient, grads))
        products = torch.autograd.grad(projection, params, allow_unused=True, materialize_grads=True)
        for total, product in zip(hessian_gradient, products):
            total += product
    return {name: weight.detach() * hg for (name, weight), hg in zip(weights.items(), hessian_gradient)}


def synflow_masks(
    model: nn.Module,
    weights: dict[str, Tensor],
    sparse_weights: dict[str, Tensor],
    budget: int,
    example_inputs: Tensor,
    iterations: int,
) -> dict[str, Tensor]:
    """SynFlow (Tanaka et al., NeurIPS 2020): iterative, data-free synaptic flow pruning.

    Every parameter and floating buffer is replaced by its absolute value (the code's `linearize`, which
    also takes |BN running stats|), the input is one all-ones sample, R = sum of the outputs, and the score
    is |dR/dw * w| with the current mask applied in the forward pass. Round r of `iterations` keeps the
    n_r = round(N * (budget / N) ** (r / iterations)) highest-scoring active weights (exponential schedule;
    the last round keeps exactly `budget`). Computed in the model's dtype, as the reference (its float64
    is commented out); non-finite scores raise. Synaptic-Flow Pruners/pruners.py:178-211 (score),
    prune.py:15-24 (rounds, exponential schedule), :9-12 (eval mode), pruners.py:12-29 (global cut).
    """
    parameter_names = {id(param): name for name, param in model.named_parameters()}
    positive = {
        name: tensor.detach().abs() if tensor.is_floating_point() else tensor.detach().clone()
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    leaves = {name: positive[parameter_names[id(weight)]].requires_grad_() for name, weight in weights.items()}
    masks = {name: full_mask(weight) for name, weight in weights.items()}
    first = next(iter(weights.values()))
    ones = torch.ones((1, *example_inputs.shape[1:]), dtype=first.dtype, device=first.device)
    competing = sum(weight.numel() for weight in sparse_weights.values())
    for round_ in range(1, iterations + 1):
        substituted = {parameter_names[id(weights[name])]: leaf * masks[name] for name, leaf in leaves.items()}
        flow = functional_call(model, positive | substituted, (ones,)).sum()
        grads = torch.autograd.grad(flow, list(leaves.values()), allow_unused=True, materialize_grads=True)
        scores = {name: (grad * leaf).detach().abs() for (name, leaf), grad in zip(leaves.items(), grads)}
        checked_finite("synflow", {name: scores[name] for name in sparse_weights})
        keep = budget if round_ == iterations else synflow_round_budget(competing, budget, round_, iterations)
        active_scores = {name: scores[name].masked_fill(~masks[name], -torch.inf) for name in sparse_weights}
        masks |= keep_highest(active_scores, keep)
    return masks


def synflow_round_budget(total: int, budget: int, round_: int, iterations: int) -> int:
    """Weights kept after round `round_`: the density (budget/total) ** (round_/iterations) of `total`."""
    return round(total * (budget / total) ** (round_ / iterations)) if total else 0


def summed_grads(
    model: nn.Module, weights: dict[str, Tensor], loss_fn: LossFn, batches: Iterable[Batch], *, create_graph: bool
) -> list[Tensor]:
    """d(sum over batches of loss_fn(model(inputs), targets)) / d(weights), without touching `.grad`."""
    params = list(weights.values())
    totals = [torch.zeros_like(param) for param in params]
    for inputs, targets in on_device(batches, params[0].device):
        grads = torch.autograd.grad(
            loss_fn(model(inputs), targets), params, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
        for total, grad in zip(totals, grads):
            total += grad
    return totals


def keep_highest(scores: dict[str, Tensor], count: int) -> dict[str, Tensor]:
    """Masks keeping the `count` highest scores across all layers (stable: earlier layer/position on ties)."""
    flat = torch.cat([score.flatten() for score in scores.values()])
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.sort(flat, descending=True, stable=True).indices[:count]] = True
    masks, start = {}, 0
    for name, score in scores.items():
        masks[name] = shaped_like(score, keep[start : start + score.numel()])
        start += score.numel()
    return masks


def checked_finite(method: str, scores: dict[str, Tensor]) -> dict[str, Tensor]:
    for name, score in scores.items():
        if not torch.isfinite(score).all():
            raise SparseConfigError(
                "init", f"init={method} gave non-finite scores in {name} (overflow?); allowed: finite scores"
            )
    return scores


def shaped_like(weight: Tensor, flat: Tensor) -> Tensor:
    """A bool mask of the weight's shape and memory format (e.g. channels_last) from a flat logical-order mask."""
    return torch.zeros_like(weight, dtype=torch.bool).copy_(flat.view(weight.shape))


def full_mask(weight: Tensor) -> Tensor:
    return torch.ones_like(weight, dtype=torch.bool)


def on_device(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    for inputs, targets in batches:
        yield inputs.to(device), targets.to(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Score in eval mode (no BN statistics updated, no dropout); every module's own flag comes back."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
