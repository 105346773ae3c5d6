"""Mask state of the prunable weights and the operations on it: zero the inactive weights, replace one
layer's mask after a drop-and-grow, count active steps, remember which weights were ever active."""
import torch
from torch import Tensor, nn

from dst_cli.sparse.bits import count_bits, pack_bits, unpack_bits

MASK_STATE_KEYS = ("masks", "explored", "active_steps", "counted_until", "epoch_start")


def random_mask(weight: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Exactly `count` active weights at random; the mask has the weight's memory format (e.g. channels_last)."""
    scores = torch.rand(weight.shape, generator=generator, device=weight.device)
    flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    flat[torch.topk(scores.flatten(), count).indices] = True
    return torch.zeros_like(weight, dtype=torch.bool).copy_(flat.view(weight.shape))


def finite_scores(scores: Tensor) -> Tensor:
    """NaN and +inf become the dtype's largest finite value: such a weight is dropped last, and always before
    anything a caller marks with +inf."""
    top = torch.finfo(scores.dtype).max
    return scores.nan_to_num(nan=top, posinf=top)


def lowest(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the `k` lowest of the flat `scores`; among equal scores the earlier position goes first.

    The same choice as the first k of a stable ascending sort, in O(n) and without a host sync. torch.topk
    leaves the order of ties to the implementation, so a top-k over a subset could pick other tied weights
    than a top-k over the whole layer; this rule picks the same ones over any subset that keeps the order.
    """
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    tied = scores == threshold
    return below | (tied & (tied.cumsum(0) <= k - below.sum()))


def weight_state(optimizer: torch.optim.Optimizer, weight: Tensor) -> dict[str, Tensor]:
    """The optimizer's state of each entry of `weight` (momentum, Adam's moments): its tensors of the weight's
    shape."""
    return {key: value for key, value in optimizer.state.get(weight, {}).items()
            if isinstance(value, Tensor) and value.shape == weight.shape}


def active_positions(mask: Tensor, count: int) -> Tensor:
    """Flat (logical-order) positions of the `count` active entries of a bool mask, ascending; no host sync."""
    return mask.flatten().nonzero_static(size=count).squeeze(1)


class SparseMasks:
    """Masks with an exact number of active weights per layer, about 1 byte of state per weight.

    Each layer's mask is one uint8 tensor of 0/1 (`multipliers`, the weight's memory format): the per-step
    zeroing multiplies the weights by it, and `masks` are bool views of the same memory. `explored` (every
    weight ever active) and `epoch_start` (the masks at the last mark_epoch) are bit-packed, 1 bit per weight
    in logical order. `active_steps` (N in the EE formula, int32 per weight) exists only when an acquisition
    needs it; it is brought up to date lazily, at every mask update, by adding the steps since the last count.
    """

    def __init__(self, weights: dict[str, nn.Parameter], masks: dict[str, Tensor], keep_active_steps: bool):
        self.names = list(weights)
        self.weights = list(weights.values())
        self.multipliers = [torch.zeros_like(w, dtype=torch.uint8).copy_(masks[n]) for n, w in weights.items()]
        self.masks = [m.view(torch.bool) for m in self.multipliers]
        self.explored = self.packed()
        self.active_steps = (
            [torch.zeros_like(w, dtype=torch.int32) for w in self.weights] if keep_active_steps else None
        )
        self.counted_until = 0
        self.epoch_start = self.packed()
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Make every inactive weight exactly zero (after each optimizer step)."""
        torch._foreach_mul_(self.weights, self.multipliers)

    def count_active_steps(self, step: int) -> None:
        if self.active_steps is not None and step > self.counted_until:
            torch._foreach_add_(self.active_steps, self.multipliers, alpha=step - self.counted_until)
        self.counted_until = max(self.counted_until, step)

    @torch.no_grad()
    def replace(self, i: int, new_mask: Tensor, optimizer: torch.optim.Optimizer, reset_left: bool = False) -> None:
        """Make `new_mask` layer i's mask. Weights that change state become 0; weights that enter get zeroed
        optimizer state (and weights that leave too, with `reset_left`); weights active before and after
        (including regrown just-dropped ones) keep both."""
        weight, mask = self.weights[i], self.masks[i]
        changed = new_mask ^ mask
        reset = changed if reset_left else new_mask & ~mask
        weight.masked_fill_(changed, 0.0)
        for state in weight_state(optimizer, weight).values():
            state.masked_fill_(reset, 0)
        mask.copy_(new_mask)
        self.explored[i] |= pack_bits(new_mask.flatten())

    @property
    def total(self) -> int:
        return sum(w.numel() for w in self.weights)

    def active_counts(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]

    def explored_share(self) -> float:
        """Share of prunable weights that have been active at some point so far."""
        return float(sum(count_bits(e) for e in self.explored)) / self.total

    def nonzero_density(self) -> float:
        """Density measured from the weights themselves (a weight that is exactly 0 counts as inactive)."""
        return float(sum(torch.count_nonzero(w) for w in self.weights)) / self.total

    def packed(self) -> list[Tensor]:
        """The masks, 1 bit per weight (logical order)."""
        return [pack_bits(m.flatten()) for m in self.masks]

    def turnover(self) -> float:
        """Share of the active weights that were not active at the last `mark_epoch` (epoch_start)."""
        entered = sum((m.flatten() & ~unpack_bits(p, m.numel())).sum() for m, p in zip(self.masks, self.epoch_start))
        return float(entered) / max(1, sum(self.active_counts()))

    def state_bytes(self) -> int:
        """Bytes of every tensor this object holds besides the weights (masks, flags, snapshot, N counters)."""
        held = [*self.multipliers, *self.explored, *self.epoch_start, *(self.active_steps or [])]
        return sum(t.numel() * t.element_size() for t in held)

    def state_dict(self) -> dict:
        return {
            "masks": dict(zip(self.names, self.masks)),
            "explored": dict(zip(self.names, self.explored)),
            "active_steps": None if self.active_steps is None else dict(zip(self.names, self.active_steps)),
            "counted_until": self.counted_until,
            "epoch_start": dict(zip(self.names, self.epoch_start)),
        }

    def check_state(self, state: dict) -> None:
        """Raise ValueError (one line: what is wrong, what this engine holds) unless `state` is a state_dict of
        masks of these layers: the keys, the layer names, each tensor's shape and dtype, the packed sizes."""
        missing = [key for key in MASK_STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"the state lacks {', '.join(missing)}; allowed: a state_dict() of a SparseEngine")
        names = state["masks"]
        if not isinstance(names, dict) or list(names) != self.names:
            shown = list(names) if isinstance(names, dict) else type(names).__name__
            raise ValueError(f"the state holds masks of layers {shown}; this engine has {self.names}")
        if (state["active_steps"] is None) != (self.active_steps is None):
            given, needed = ("lacks", "needs") if state["active_steps"] is None else ("holds", "has no")
            raise ValueError(f"the state {given} N counters (active_steps); this engine's acquisition {needed} "
                             "such counters (needs_active_steps)")
        held = {"masks": (self.masks, torch.bool), "explored": (self.explored, torch.uint8),
                "epoch_start": (self.epoch_start, torch.uint8)}
        if self.active_steps is not None:
            held["active_steps"] = (self.active_steps, torch.int32)
        for key, (tensors, dtype) in held.items():
            given = state[key]
            if not isinstance(given, dict) or set(given) != set(self.names):
                shown = sorted(given) if isinstance(given, dict) else type(given).__name__
                raise ValueError(f"the state's {key} are of layers {shown}; this engine has {self.names}")
            for name, mine in zip(self.names, tensors):
                tensor = given[name]
                if not isinstance(tensor, Tensor) or tensor.shape != mine.shape or tensor.dtype != dtype:
                    what = (f"a {tensor.dtype} tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor)
                            else type(tensor).__name__)
                    raise ValueError(f"the state's {key} of {name} is {what}; allowed: a {dtype} tensor of shape "
                                     f"{tuple(mine.shape)}")
        counted = state["counted_until"]
        if isinstance(counted, bool) or not isinstance(counted, int) or counted < 0:
            raise ValueError(f"the state's counted_until={counted!r} is invalid; allowed: an integer >= 0")

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Make `state` (a state_dict) these masks: all of it, or nothing when check_state refuses it."""
        self.check_state(state)
        for i, name in enumerate(self.names):
            self.masks[i].copy_(state["masks"][name])
            self.explored[i].copy_(state["explored"][name])
            if self.active_steps is not None:
                self.active_steps[i].copy_(state["active_steps"][name])
        self.epoch_start = [state["epoch_start"][name].to(self.masks[0].device) for name in self.names]
        self.counted_until = state["counted_until"]
        self.apply()
