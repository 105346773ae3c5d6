"""Mask state of the prunable weights and the operations on it: zero the inactive weights, replace one
layer's mask after a drop-and-grow, count active steps, remember which weights were ever active."""
import torch
from torch import Tensor, nn

from dst_cli.sparse.bits import pack_bits, unpack_bits


def random_mask(weight: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Exactly `count` active weights at random; the mask has the weight's memory format (e.g. channels_last)."""
    scores = torch.rand(weight.shape, generator=generator, device=weight.device)
    flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    flat[torch.topk(scores.flatten(), count).indices] = True
    return torch.zeros_like(weight, dtype=torch.bool).copy_(flat.view(weight.shape))


class SparseMasks:
    """Boolean masks with an exact number of active weights per layer.

    `explored` marks every weight that has been active at some point (1 byte per weight). `active_steps`
    (N in the EE formula, int32 per weight) exists only when an acquisition needs it; it is brought up to
    date lazily, at every mask update, by adding the steps elapsed since the last count.
    """

    def __init__(self, weights: dict[str, nn.Parameter], masks: dict[str, Tensor], keep_active_steps: bool):
        self.names = list(weights)
        self.weights = list(weights.values())
        self.masks = [masks[name] for name in self.names]
        # The masks in the weights' dtype: multiplying by them is several times faster than by bool masks
        # and keeps the per-step zeroing on the fused multi-tensor path. Refreshed whenever a mask changes.
        self.multipliers = [m.to(w.dtype) for m, w in zip(self.masks, self.weights)]
        self.explored = [m.clone() for m in self.masks]
        self.active_steps = [torch.zeros_like(w, dtype=torch.int32) for w in self.weights] if keep_active_steps else None
        self.counted_until = 0
        self.epoch_start = self.packed()
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Make every inactive weight exactly zero (after each optimizer step)."""
        torch._foreach_mul_(self.weights, self.multipliers)

    def count_active_steps(self, step: int) -> None:
        if self.active_steps is not None and step > self.counted_until:
            torch._foreach_add_(self.active_steps, self.masks, alpha=step - self.counted_until)
        self.counted_until = max(self.counted_until, step)

    @torch.no_grad()
    def replace(self, i: int, new_mask: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Make `new_mask` layer i's mask. Weights that change state become 0; weights that enter get zeroed
        optimizer state; weights active before and after (including regrown just-dropped ones) keep both."""
        weight, mask = self.weights[i], self.masks[i]
        entered = new_mask & ~mask
        weight.masked_fill_(new_mask ^ mask, 0.0)
        for state in optimizer.state.get(weight, {}).values():
            if isinstance(state, Tensor) and state.shape == weight.shape:
                state.masked_fill_(entered, 0)
        mask.copy_(new_mask)
        self.multipliers[i].copy_(new_mask)
        self.explored[i] |= new_mask

    @property
    def total(self) -> int:
        return sum(w.numel() for w in self.weights)

    def active_counts(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]

    def explored_share(self) -> float:
        """Share of prunable weights that have been active at some point so far."""
        return float(sum(e.sum() for e in self.explored)) / self.total

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

    def state_dict(self) -> dict:
        return {
            "masks": dict(zip(self.names, self.masks)),
            "explored": dict(zip(self.names, self.explored)),
            "active_steps": None if self.active_steps is None else dict(zip(self.names, self.active_steps)),
            "counted_until": self.counted_until,
            "epoch_start": dict(zip(self.names, self.epoch_start)),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if list(state["masks"]) != self.names:
            raise ValueError(f"the state holds masks of layers {list(state['masks'])}; this engine has {self.names}")
        if (state["active_steps"] is None) != (self.active_steps is None):
            raise ValueError("the state's N counters do not match this engine's acquisition (needs_active_steps)")
        for i, name in enumerate(self.names):
            if state["masks"][name].shape != self.masks[i].shape:
                raise ValueError(f"mask {name} has shape {tuple(state['masks'][name].shape)}; "
                                 f"this engine's is {tuple(self.masks[i].shape)}")
            self.masks[i].copy_(state["masks"][name])
            self.multipliers[i].copy_(state["masks"][name])
            self.explored[i].copy_(state["explored"][name])
            if self.active_steps is not None:
                self.active_steps[i].copy_(state["active_steps"][name])
        self.epoch_start = [state["epoch_start"][name].to(self.masks[0].device) for name in self.names]
        self.counted_until = state["counted_until"]
        self.apply()
