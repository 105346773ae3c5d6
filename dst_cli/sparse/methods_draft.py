"""Draft of the missing DST baselines (MEST, SNFS, DSR) and GraNet's gradual density; LIB merges these into
acquisition.py and schedule.py.

Counts that move between layers (SNFS, DSR) are split by `apportion`: exact integers that sum to the
requested total and never exceed a layer's room.
"""
import math

import torch
from torch import Tensor

from dst_cli.sparse.acquisition import SET, Acquisition, ScoreContext, register_acquisition
from dst_cli.sparse.errors import check_int, check_number

ADAM_EPS = 1e-8  # sparse_learning core.py:520: exp_avg / (sqrt(exp_avg_sq) + 1e-08)


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


def momentum(ctx: ScoreContext) -> Tensor:
    """SNFS's momentum (sparse_learning core.py:516-524): SGD's momentum_buffer, or Adam's
    exp_avg / (sqrt(exp_avg_sq) + 1e-8). Before the optimizer holds any (first update, or SGD without
    momentum) the gradient of this batch stands in: it is what the first SGD step stores as its momentum."""
    state = ctx.optimizer_state
    if "exp_avg" in state and "exp_avg_sq" in state:
        return state["exp_avg"] / (state["exp_avg_sq"].sqrt() + ADAM_EPS)
    return state.get("momentum_buffer", ctx.grad)


def active_counts(contexts: dict[str, ScoreContext]) -> dict[str, int]:
    """Active weights per layer before this update (one host sync for all layers)."""
    return dict(zip(contexts, torch.stack([ctx.mask.sum() for ctx in contexts.values()]).tolist()))


@register_acquisition("mest")
class MEST(SET):
    """MEST (Yuan et al., NeurIPS 2021): drop the active weights with the lowest |w| + lam * |g|, grow at random.

    boone891214/MEST prune_utils/utils_pr.py:122-136 (importance |w| + sp_lmd * |grad|, lowest pruned),
    :370-406 (weight_growing: random among the zeros, just-pruned ones included). lam defaults to the code's
    0.0 (retrain.py:22-23, `--sp-lmd`; no published script sets it), which makes the drop |w| as in SET: set
    acq.lam for the gradient term. Only the gradient of active weights is read, so no dense gradient is needed.
    Not reproduced here: MEST's schedule (prune to a lower bound, grow back, every 5 epochs, mutation
    ratio stepped down at epochs 90 and 120) is a schedule matter.
    """

    def __init__(self, lam: float = 0.0):
        self.lam = check_number("acq.lam", lam, 0.0)

    def drop_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.weight.abs() + self.lam * ctx.grad.abs()


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
    The momentum of inactive weights comes from dense gradients at every step (SNFS needs them: the
    training FLOPs must count a dense backward each step, not only at updates).
    """

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return momentum(ctx).abs()

    def regrowth_counts(self, dropped: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        means = torch.stack([momentum(ctx).abs()[ctx.mask].mean() for ctx in contexts.values()]).nan_to_num(0.0)
        shares = dict(zip(contexts, means.tolist()))
        active = active_counts(contexts)
        # free slots after the drop, just-dropped weights included (core.py:476-478, regrow_dropped=True)
        room = {name: ctx.mask.numel() - active[name] + dropped[name] for name, ctx in contexts.items()}
        return apportion(sum(dropped.values()), shares, room)


class DSR(SET):
    """Dynamic sparse reparameterization (Mostafa & Wang, ICML 2019): prune by one global magnitude cut,
    re-grow at random, the regrowth split across layers in proportion to each layer's surviving weights.

    IntelAI/dynamic-reparameterization main.py:627-685 (rewire: prune_threshold per layer with one global H,
    grow_backs proportional to the nonzeros left after pruning, :639-670; H halved or doubled to keep the
    number pruned within 10% of the target, :680-684), parameterized_tensors.py:182-214 (prune |w| < H among
    the active, keep at least one), :216-239 (random growth, the just-pruned weights excluded: run it with
    regrow_dropped=False).

    Not registered yet: the engine drops a per-layer share k_l of every layer, and DSR's defining step is
    that the layers lose different shares under one global cut. `drop_counts` is that cut (the exact-count
    limit of the adaptive threshold: the total that the schedule asks for, the smallest |w| across all layers);
    it needs the engine hook requested from LIB. Without it DSR would reduce to SET.
    """

    def drop_counts(self, planned: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        """How many of each layer's active weights the global magnitude cut removes: the schedule's total,
        sum(planned), taken where |w| is smallest across all layers; every layer keeps at least its largest
        active weight (parameterized_tensors.py:197-199)."""
        total = sum(planned.values())
        scores = []
        for ctx in contexts.values():
            magnitude = ctx.weight.abs().flatten().masked_fill(~ctx.mask.flatten(), math.inf)
            if ctx.mask.any():
                magnitude[torch.where(ctx.mask.flatten(), ctx.weight.abs().flatten(), -1.0).argmax()] = math.inf
            scores.append(magnitude)
        layer_of = torch.cat([torch.full((s.numel(),), i, device=s.device) for i, s in enumerate(scores)])
        lowest = torch.sort(torch.cat(scores), stable=True).indices[:total]
        counts = torch.bincount(layer_of[lowest], minlength=len(scores)).tolist()
        return dict(zip(contexts, counts))

    def regrowth_counts(self, dropped: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        active = active_counts(contexts)
        surviving = {name: float(active[name] - dropped[name]) for name in contexts}
        room = {name: ctx.mask.numel() - active[name] for name, ctx in contexts.items()}  # just-pruned excluded
        return apportion(sum(dropped.values()), surviving, room)


def gradual_density(
    step: int, *, initial_density: float, final_density: float, start_step: int, end_step: int
) -> float:
    """GraNet's global density at `step`: Zhu & Gupta's cubic from initial_density down to final_density.

    d(t) = final + (initial - final) * (1 - (t - start) / (end - start)) ** 3, initial before start, final
    from end on. VITA-Group/GraNet CIFAR/sparselearning/core.py:367-381 (prune_decay = (1 - (iter - ini) /
    total) ** 3 in units of update iterations; curr_prune_rate = (1 - init) + (init - final) * (1 - decay));
    equal to this at update steps that are multiples of the update interval.
    """
    check_number("schedule.final_density", final_density, 0.0, 1.0, low_open=True)
    check_number("schedule.initial_density", initial_density, final_density, 1.0)
    check_int("schedule.start_step", start_step, 0)
    check_int("schedule.end_step", end_step, start_step + 1)
    if step <= start_step:
        return initial_density
    if step >= end_step:
        return final_density
    remaining = 1.0 - (step - start_step) / (end_step - start_step)
    return final_density + (initial_density - final_density) * remaining**3
