"""What to drop and what to grow: the acquisition protocol, its registry and the built-in functions.

An acquisition scores weights; the engine drops the k active weights with the lowest drop score, then grows
the k candidates with the highest grow score (candidates: every weight inactive after the drop, see
UpdateSchedule.regrow_dropped). As in jaxpruner (algorithms/sparse_trainers.py: one small class per algorithm),
RigL is SET with another grow score and EE is RigL plus an exploration bonus. Every score receives one
ScoreContext, so a method that needs the gradient to drop (MEST) or the momentum to grow (SNFS) fits
without a signature change; `drop_counts` and `regrowth_counts` let a method move the drop (DSR) or the
growth (SNFS, DSR) between layers, the engine checking that the global count stays exact.
Counts that move between layers are split by `apportion` (DSR) or `apportion_overflow_equally` (SNFS):
exact integers that sum to the requested total and never exceed a layer's room.
"""
import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from dst_cli.sparse.errors import check_choice, check_number
from dst_cli.sparse.masks import finite_scores, lowest
from dst_cli.sparse.registry import Registry, options_repr


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
        An override may move counts between layers or lower them (the regrowth then totals what was dropped);
        the engine checks the total is at most the plan's and each layer's count within 0..active."""
        return dict(planned)

    def regrowth_counts(
        self, dropped: dict[str, int], contexts: dict[str, ScoreContext], room: dict[str, int]
    ) -> dict[str, int]:
        """How many weights each layer grows, given how many it dropped and how many it can take (`room`:
        its candidates for growth). Default: the same per layer. An override may move counts between
        layers; the engine checks the total stays exact and every layer within its room."""
        return dict(dropped)

    def __repr__(self) -> str:
        return options_repr(self)


ACQUISITIONS: Registry[Acquisition] = Registry("acq", Acquisition)
register_acquisition = ACQUISITIONS.register  # class decorator: make a subclass available as acq=NAME


def acquisition_names() -> list[str]:
    return ACQUISITIONS.names()


def make_acquisition(acq: "str | type[Acquisition] | Acquisition", **options) -> Acquisition:
    """An acquisition from a registered name or a class (with its options), or an instance as it is."""
    return ACQUISITIONS.make(acq, options)


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


Bonus = Literal["log", "sqrt"]
BONUSES = get_args(Bonus)


@register_acquisition("ee")
class EE(RigL):
    """DST-EE (Huang et al., DAC 2023): grow by |g| + c * bonus(t, N).

    bonus `log`:  ln(t) / (N + eps)         bonus `sqrt`: sqrt(ln(t) / (N + eps))   (UCB1)
    t = optimizer steps taken (ln taken of max(t, 1): no bonus at a step-0 update), N = steps the weight has
    been active so far. The paper's code is not public; this follows its text.

    c: weight of the exploration term (0 is RigL); chosen on the digits validation split
    eps: added to N, so that never-active weights get a finite bonus c * ln(t) / eps
    bonus: log: ln(t) / (N + eps); sqrt: sqrt(ln(t) / (N + eps)) (UCB1)
    """

    needs_active_steps = True

    def __init__(self, c: float = 3e-4, eps: float = 1.0, bonus: Bonus = "log"):
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

    lam: weight of |g| in the drop score |w| + lam * |g|
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
    """Integers proportional to `shares`, each within 0..room[name], summing to `total` exactly (DSR).

    Real quotas first: a layer whose quota exceeds its room is filled and the rest is split again among the
    others in proportion to their shares, until every quota fits; a zero or non-finite share counts as 0,
    and if no open layer has a positive share the rest is split by room. Then `round_quotas`.
    """
    check_room(total, room)
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
    return round_quotas(total, quota, room)


def apportion_overflow_equally(total: int, shares: dict[str, float], room: dict[str, int]) -> dict[str, int]:
    """Integers near total * share (shares normalised to sum 1), each within 0..room[name], summing to
    `total`; what a layer's quota holds beyond its room is spread in EQUAL parts over the other layers (SNFS).

    sparse_learning core.py:471-494 (ITOP ImageNet/core.py:560-583 is the same loop) caps each layer's
    regrowth, sums the excess into `residual` and adds residual / (number of layers) to every layer at the
    next pass, again and again while anything overflows: every layer that still has room receives the same
    increments until it is full. The limit of that loop, computed here directly, is water-filling with one
    common level L >= 0: quota = min(total * share + L, room) for every layer, L the smallest level at which
    the quotas sum to `total` (L = 0 when nothing overflows). A zero or non-finite share counts as 0 (such a
    layer still takes its equal part of an overflow); if no share is positive the whole total is spread
    equally. Then `round_quotas`.
    """
    check_room(total, room)
    return round_quotas(total, overflow_equally_quotas(total, shares, room), room)


def overflow_equally_quotas(total: int, shares: dict[str, float], room: dict[str, int]) -> dict[str, float]:
    """The real quotas of `apportion_overflow_equally`: min(total * share + L, room) per layer."""
    clean = {name: share if math.isfinite(share) and share > 0 else 0.0 for name, share in shares.items()}
    norm = sum(clean.values())
    base = {name: total * share / norm if norm > 0 else 0.0 for name, share in clean.items()}
    # raise the common level through the layers' gaps (room - base), smallest gap first
    gaps = sorted((room[name] - base[name], position, name) for position, name in enumerate(shares)
                  if room[name] > base[name])
    left = total - sum(min(base[name], room[name]) for name in shares)  # what the overflow and open layers need
    level = 0.0
    for index, (gap, _, _) in enumerate(gaps):
        open_count = len(gaps) - index
        if left <= (gap - level) * open_count:
            level += left / open_count
            break
        left -= (gap - level) * open_count
        level = gap
    return {name: min(base[name] + level, float(room[name])) for name in shares}


def check_room(total: int, room: dict[str, int]) -> None:
    if total > sum(room.values()):
        raise ValueError(f"cannot place {total} weights in layers with room for {sum(room.values())}")


def round_quotas(total: int, quota: dict[str, float], room: dict[str, int]) -> dict[str, int]:
    """Integers from real quotas that sum to `total` (within float error), each within 0..room[name], summing
    to `total` exactly: every quota floored, then the missing units one each to the largest fractional parts
    (ties: earlier layer); units over the total (float error) come off the smallest fractional parts."""
    counts = {name: max(0, min(room[name], math.floor(quota[name]))) for name in quota}
    position = {name: i for i, name in enumerate(quota)}
    order = sorted(quota, key=lambda name: (counts[name] - quota[name], position[name]))
    missing = total - sum(counts.values())
    while missing > 0:
        for name in order:
            if missing > 0 and counts[name] < room[name]:
                counts[name] += 1
                missing -= 1
    while missing < 0:
        for name in reversed(order):
            if missing < 0 and counts[name] > 0:
                counts[name] -= 1
                missing += 1
    return counts


SNFS_DENSE_SPARSITY = 0.2  # sparse_learning core.py:368: layers less sparse than this may drop less


@register_acquisition("snfs")
class SNFS(Acquisition):
    """Sparse momentum (Dettmers & Zettlemoyer 2019): drop the smallest |w| per layer, grow by momentum
    magnitude, and split the regrowth across layers by each layer's mean |momentum| over its active weights.

    TimDettmers/sparse_learning sparselearning/funcs.py:7-37 (layer statistic: mean |momentum| of the active
    weights, normalised to sum 1 by core.py:451-453), core.py:461-494 (regrowth = share * total removed,
    capped at the layer's free slots, the excess spread equally over the layers, see
    `apportion_overflow_equally`), core.py:359-375 (adjust_prune_rate, see `drop_counts`), funcs.py:177-249
    (growth: highest |momentum| among the zeros, just-dropped included), funcs.py:56-114 (magnitude prune,
    ceil(rate * nonzeros) with the layer's adjusted rate, :107). ITOP's ImageNet/core.py repeats these
    (:436-452 adjust_prune_rate, :550-599 the redistribution).
    Differences, on purpose: the reference ceils each share and floors it again when growing (core.py:483,
    :407), so its total drifts and is corrected by a smoothed adjustment (:416-419); here the split is exact
    (integers summing to the total dropped), and a layer may fill up completely (the reference caps at 99%
    of its free slots, :486). The proportional re-split of an overflow (`apportion`, as DSR uses) is not
    offered: no reference uses it and nothing shows it better; the equal spread is the published code's.
    The momentum of inactive weights comes from dense gradients at every step, so the training FLOPs count
    a dense backward at each step (`dense_gradient_every_step`), not only at updates.
    """

    dense_gradient_every_step = True

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return momentum(ctx).abs()

    @staticmethod
    def layer_shares(contexts: dict[str, ScoreContext]) -> list[float]:
        """Each layer's mean |momentum| over its active weights (0 for a layer without any), before the
        update: funcs.py:35-37 on the mask as it stands before the prune (core.py:440, gather_statistics)."""
        means = torch.stack([momentum(ctx).abs()[ctx.mask].mean() for ctx in contexts.values()])
        return means.nan_to_num(0.0).tolist()

    def drop_counts(self, planned: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        """adjust_prune_rate (sparse_learning core.py:359-375; ITOP ImageNet/core.py:436-452): a layer less
        than 20% sparse whose share of the momentum exceeds the mean share (1 / layers: "growing") prunes at
        min(sparsity, rate) instead of the rate, i.e. drops at most ceil(sparsity * active) weights (funcs.py
        :107); a dense growing layer drops nothing. The reference ceils rate * nonzeros: with the schedule's
        rounding=ceil (itop, the default) this equals its count exactly, since ceil(min(a, b) * n) =
        min(ceil(a * n), ceil(b * n)). A layer whose share is 0 or undefined is never "growing" (the
        reference divides by it, :372)."""
        shares = self.layer_shares(contexts)
        total = sum(shares)
        actives = torch.stack([ctx.mask.sum() for ctx in contexts.values()]).tolist()
        counts = dict(planned)
        for (name, ctx), share, active in zip(contexts.items(), shares, actives):
            sparsity = (ctx.mask.numel() - active) / float(ctx.mask.numel())
            growing = share > 0 and total > 0 and (1.0 / len(shares)) / (share / total) < 1.0
            if sparsity < SNFS_DENSE_SPARSITY and growing:
                counts[name] = min(planned[name], math.ceil(sparsity * active))
        return counts

    def regrowth_counts(
        self, dropped: dict[str, int], contexts: dict[str, ScoreContext], room: dict[str, int]
    ) -> dict[str, int]:
        shares = dict(zip(contexts, self.layer_shares(contexts)))
        return apportion_overflow_equally(sum(dropped.values()), shares, room)


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
