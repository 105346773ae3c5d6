"""What to drop and what to grow: the acquisition protocol, its registry and the built-in functions.

An acquisition scores weights; the engine drops the k active weights with the lowest drop score, then grows
the k candidates with the highest grow score (candidates: every weight inactive after the drop, see
UpdateSchedule.regrow_dropped). As in jaxpruner (algorithms/sparse_trainers.py: one small class per algorithm),
RigL is SET with another grow score and EE is RigL plus an exploration bonus. Every score receives one
ScoreContext, so a method that needs the gradient to drop (MEST) or the momentum to grow (SNFS) fits
without a signature change; `drop_counts` and `regrowth_counts` let a method move the drop (DSR) or the
growth (SNFS, DSR) between layers, the engine checking that the global count stays exact.
Counts that move between layers are split by `apportion`: exact integers that sum to the requested total
and never exceed a layer's room.
"""
import inspect
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dst_cli.sparse.errors import SparseConfigError, check_choice, check_number, invalid
from dst_cli.sparse.masks import finite_scores, lowest


@dataclass
class ScoreContext:
    """Everything a score may use for one prunable weight at one mask update."""

    name: str
    weight: Tensor
    grad: Tensor                          # dense gradient of this batch (zeros if the weight has none)
    mask: Tensor                          # bool mask of the layer before this update (do not modify)
    optimizer_state: dict[str, Tensor]    # the weight's per-weight optimizer state, e.g. "momentum_buffer"
    active_steps: Tensor | None           # N: optimizer steps each weight has been active (needs_active_steps)
    step: int                             # optimizer steps taken so far
    generator: torch.Generator            # the engine's generator (same seed on every rank)

    def uniform(self) -> Tensor:
        """Uniform random numbers of the weight's shape from the engine's generator."""
        return torch.rand(self.weight.shape, generator=self.generator, device=self.weight.device)


class Acquisition:
    """Subclass and override the scores; register the class with @register_acquisition("name").

    Options are keyword arguments of __init__; check them there and raise SparseConfigError(key="acq.<opt>").
    """

    name: str = ""
    updates_topology = True      # False: the initial mask is kept (no updates at all)
    uses_gradient = True         # updates need the dense gradient (counted in the training FLOPs)
    dense_gradient_every_step = False  # every step needs the dense gradient (SNFS's momentum), for FLOPs
    needs_active_steps = False   # the engine keeps N counters (int32 per weight) only when True
    schedule_defaults: dict = {}  # schedule fields this method defaults to when a preset name is given

    def drop_scores(self, ctx: ScoreContext) -> Tensor:
        """The engine drops the k active weights with the lowest score. Default |w|."""
        return ctx.weight.abs()

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        """The engine grows the k candidates with the highest score."""
        raise NotImplementedError(f"{type(self).__name__} must define grow_scores")

    def drop_counts(self, planned: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        """How many active weights each layer drops, given the schedule's plan. Default: the plan.
        An override may move counts between layers; the engine checks the total and each layer's 0..active."""
        return dict(planned)

    def regrowth_counts(
        self, dropped: dict[str, int], contexts: dict[str, ScoreContext], room: dict[str, int]
    ) -> dict[str, int]:
        """How many weights each layer grows, given how many it dropped and how many it can take (`room`:
        its candidates for growth). Default: the same per layer. An override may move counts between
        layers; the engine checks the total stays exact and every layer within its room."""
        return dict(dropped)


_REGISTRY: dict[str, type[Acquisition]] = {}


def register_acquisition(name: str):
    """Class decorator: make an Acquisition subclass available as acq=`name`."""

    def register(cls: type[Acquisition]) -> type[Acquisition]:
        if not (isinstance(cls, type) and issubclass(cls, Acquisition)):
            raise TypeError(f"@register_acquisition({name!r}) needs an Acquisition subclass, got {cls!r}")
        taken = _REGISTRY.get(name)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"acquisition name {name!r} is already taken by {taken.__module__}.{taken.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def acquisition_names() -> list[str]:
    return list(_REGISTRY)


def make_acquisition(acq: "str | type[Acquisition] | Acquisition", **options) -> Acquisition:
    """An acquisition from a registered name or a class (with its options), or an instance as it is."""
    if isinstance(acq, Acquisition):
        if options:
            raise SparseConfigError("acq_options", "acq_options cannot be given with an Acquisition instance; "
                                    "allowed: options with a registered name or a class")
        return acq
    if isinstance(acq, str):
        if acq not in _REGISTRY:
            raise invalid("acq", acq, " | ".join(_REGISTRY))
        acq = _REGISTRY[acq]
    if not (isinstance(acq, type) and issubclass(acq, Acquisition)):
        raise invalid("acq", acq, f"a registered name ({' | '.join(_REGISTRY)}), an Acquisition subclass or instance")
    accepted = [p.name for p in inspect.signature(acq.__init__).parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    label = acq.name or acq.__qualname__
    for key in options:
        if key not in accepted:
            raise SparseConfigError(f"acq.{key}", f"acq.{key} is not an option of acq={label}; "
                                    f"allowed: {', '.join(accepted) or 'no options'}")
    return acq(**options)


@register_acquisition("set")
class SET(Acquisition):
    """Mocanu et al. 2018: drop the smallest |w|, grow uniformly at random
    (RigL TF sparse_optimizers_base.py:260-274; jaxpruner algorithms/sparse_trainers.py SET._get_grow_scores)."""

    uses_gradient = False

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.uniform()


@register_acquisition("random")
class Random(SET):
    """Pure-noise control: drop and grow uniformly at random."""

    def drop_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.uniform()


@register_acquisition("static")
class Static(SET):
    """No updates: the initial random mask is kept."""

    updates_topology = False


@register_acquisition("rigl")
class RigL(SET):
    """Evci et al. 2020: grow the largest dense-gradient magnitudes
    (RigL TF sparse_optimizers_base.py:523-538: score_grow = |grad of the masked weights|;
    jaxpruner algorithms/sparse_trainers.py RigL._get_grow_scores)."""

    uses_gradient = True

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.grad.abs()


BONUSES = ("log", "sqrt")


@register_acquisition("ee")
class EE(RigL):
    """DST-EE (Huang et al., DAC 2023): grow by |g| + c * bonus(t, N).

    bonus `log`:  ln(t) / (N + eps)         bonus `sqrt`: sqrt(ln(t) / (N + eps))   (UCB1)
    t = optimizer steps taken (ln taken of max(t, 1): no bonus at a step-0 update), N = steps the weight has
    been active so far. The paper's code is not public; this follows its text.
    """

    needs_active_steps = True

    def __init__(self, c: float = 3e-4, eps: float = 1.0, bonus: str = "log"):
        self.c = check_number("acq.c", c, 0.0)
        self.eps = check_number("acq.eps", eps, 0.0, low_open=True)
        self.bonus = check_choice("acq.bonus", bonus, BONUSES)

    def exploration_bonus(self, active_steps: Tensor, step: int) -> Tensor:
        ratio = math.log(max(step, 1)) / (active_steps.float() + self.eps)
        return ratio if self.bonus == "log" else ratio.sqrt()

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.grad.abs() + self.c * self.exploration_bonus(ctx.active_steps, ctx.step)


@register_acquisition("mest")
class MEST(SET):
    """MEST (Yuan et al., NeurIPS 2021): drop the active weights with the lowest |w| + lam * |g|, grow at random.

    boone891214/MEST prune_utils/utils_pr.py:122-136 (importance |w| + sp_lmd * |grad|, lowest pruned),
    :370-406 (weight_growing: random among the zeros, just-pruned ones included). lam defaults to the code's
    0.0 (retrain.py:22-23, `--sp-lmd`; no published script sets it), which makes MEST drop and grow exactly
    as SET: set acq.lam for the gradient term. Only the gradient of active weights is read, so no dense
    gradient is needed. Not reproduced here: MEST's schedule (prune to a lower bound, grow back, every 5
    epochs, mutation ratio stepped down at epochs 90 and 120) is a schedule matter.
    """

    def __init__(self, lam: float = 0.0):
        self.lam = check_number("acq.lam", lam, 0.0)

    def drop_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.weight.abs() + self.lam * ctx.grad.abs()


ADAM_EPS = 1e-8  # sparse_learning core.py:520: exp_avg / (sqrt(exp_avg_sq) + 1e-08)


def momentum(ctx: ScoreContext) -> Tensor:
    """SNFS's momentum (sparse_learning core.py:516-524): SGD's momentum_buffer, or Adam's
    exp_avg / (sqrt(exp_avg_sq) + 1e-8). Before the optimizer holds any (first update, or SGD without
    momentum) the gradient of this batch stands in: it is what the first SGD step stores as its momentum."""
    state = ctx.optimizer_state
    if "exp_avg" in state and "exp_avg_sq" in state:
        return state["exp_avg"] / (state["exp_avg_sq"].sqrt() + ADAM_EPS)
    return state.get("momentum_buffer", ctx.grad)


def apportion(total: int, shares: dict[str, float], room: dict[str, int]) -> dict[str, int]:
    """Integers proportional to `shares`, each within 0..room[name], summing to `total` exactly.

    Real quotas first: a layer whose quota exceeds its room is filled and the rest is split again among the
    others (the residual loop of sparse_learning core.py:461-494, here run to the end); a zero or non-finite
    share counts as 0, and if no open layer has a positive share the rest is split by room. Then every quota
    is floored and the missing units go, one each, to the largest fractional parts (ties: earlier layer).
    """
    if total > sum(room.values()):
        raise ValueError(f"cannot place {total} weights in layers with room for {sum(room.values())}")
    clean = {name: share if math.isfinite(share) and share > 0 else 0.0 for name, share in shares.items()}
    quota = {name: 0.0 for name in shares}
    open_layers, left = [name for name in shares if room[name] > 0], float(total)
    while open_layers and left > 0:
        weights = {name: clean[name] for name in open_layers}
        if sum(weights.values()) <= 0:
            weights = {name: float(room[name]) for name in open_layers}
        scale = left / sum(weights.values())
        full = [name for name in open_layers if weights[name] * scale >= room[name]]
        if not full:
            quota.update({name: weights[name] * scale for name in open_layers})
            break
        for name in full:
            quota[name] = float(room[name])
            left -= room[name]
        open_layers = [name for name in open_layers if name not in full]
    counts = {name: min(room[name], math.floor(quota[name])) for name in shares}
    position = {name: i for i, name in enumerate(shares)}
    order = sorted(shares, key=lambda name: (counts[name] - quota[name], position[name]))
    missing = total - sum(counts.values())
    while missing > 0:
        for name in order:
            if missing > 0 and counts[name] < room[name]:
                counts[name] += 1
                missing -= 1
    return counts


@register_acquisition("snfs")
class SNFS(Acquisition):
    """Sparse momentum (Dettmers & Zettlemoyer 2019): drop the smallest |w| per layer, grow by momentum
    magnitude, and split the regrowth across layers by each layer's mean |momentum| over its active weights.

    TimDettmers/sparse_learning sparselearning/funcs.py:7-37 (layer statistic: mean |momentum| of the active
    weights, normalised to sum 1 by core.py:451-453), core.py:461-494 (regrowth = share * total removed,
    capped at the layer's free slots, residual re-split), funcs.py:177-249 (growth: highest |momentum| among
    the zeros, just-dropped included), funcs.py:56-114 (magnitude prune, ceil(rate * nonzeros)).
    Differences, on purpose: the reference ceils each share and floors it again when growing (core.py:483,
    :407), so its total drifts and is corrected by a smoothed adjustment (:416-419); here the split is exact
    (`apportion`), and a layer may fill up completely (the reference stops at 99% of its free slots).
    The momentum of inactive weights comes from dense gradients at every step, so the training FLOPs count
    a dense backward at each step (`dense_gradient_every_step`), not only at updates.
    """

    dense_gradient_every_step = True

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return momentum(ctx).abs()

    def regrowth_counts(
        self, dropped: dict[str, int], contexts: dict[str, ScoreContext], room: dict[str, int]
    ) -> dict[str, int]:
        means = torch.stack([momentum(ctx).abs()[ctx.mask].mean() for ctx in contexts.values()]).nan_to_num(0.0)
        return apportion(sum(dropped.values()), dict(zip(contexts, means.tolist())), room)


@register_acquisition("dsr")
class DSR(SET):
    """Dynamic sparse reparameterization (Mostafa & Wang, ICML 2019): prune by one global magnitude cut,
    re-grow at random, the regrowth split across layers in proportion to each layer's surviving weights.

    IntelAI/dynamic-reparameterization main.py:627-685 (rewire: prune_threshold per layer with one global H,
    grow_backs proportional to the nonzeros left after pruning, :639-670; H halved or doubled to keep the
    number pruned within 10% of the target, :680-684), parameterized_tensors.py:182-214 (prune |w| < H among
    the active, keep at least one), :216-239 (random growth, the just-pruned weights excluded: DSR defaults
    to regrow_dropped=False when the schedule is a preset name and the option is not given).
    The global cut is the exact-count limit of the adaptive threshold: the total the schedule asks for,
    taken where |w| is smallest across all layers (ties: earlier layer, earlier position).
    """

    schedule_defaults = {"regrow_dropped": False}

    def drop_counts(self, planned: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        """How many of each layer's active weights the global magnitude cut removes: sum(planned) in all;
        every layer keeps at least its largest active weight (parameterized_tensors.py:197-199)."""
        scores = []
        for ctx in contexts.values():
            magnitude = finite_scores(ctx.weight.abs()[ctx.mask])
            if magnitude.numel():
                magnitude[magnitude.argmax()] = math.inf
            scores.append(magnitude)
        cut = lowest(torch.cat(scores), sum(planned.values()))
        counts = torch.stack([part.sum() for part in cut.split([s.numel() for s in scores])]).tolist()
        return dict(zip(contexts, counts))

    def regrowth_counts(
        self, dropped: dict[str, int], contexts: dict[str, ScoreContext], room: dict[str, int]
    ) -> dict[str, int]:
        active = torch.stack([ctx.mask.sum() for ctx in contexts.values()]).tolist()
        surviving = {name: float(count - dropped[name]) for name, count in zip(contexts, active)}
        return apportion(sum(dropped.values()), surviving, room)
