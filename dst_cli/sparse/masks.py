"""Mask state of the prunable weights: which weights are active, how long each has been active,
and the two operations on it (zero the inactive weights; drop and grow one update's worth)."""
import torch
from torch import Tensor, nn

from dst_cli.sparse.acquisition import SET


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every Conv and Linear layer, in module order; biases and norm layers stay dense."""
    return {
        f"{module_name}.weight" if module_name else "weight": module.weight
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    }


class SparseMasks:
    """Boolean masks with an exact number of active weights per layer, and per-weight activity counts.

    `active_steps[i]` counts the training steps weight i has been active (N in the EE formula). It is
    brought up to date lazily, at every mask update, by adding the steps elapsed since the last count.
    """

    def __init__(self, weights: dict[str, nn.Parameter], counts: dict[str, int], generator: torch.Generator):
        self.names = list(weights)
        self.weights = list(weights.values())
        self.counts = [counts[name] for name in self.names]
        self.masks = [self._random_mask(w, k, generator) for w, k in zip(self.weights, self.counts)]
        # The masks in the weights' dtype: multiplying by them is several times faster than by bool masks
        # and keeps the per-step zeroing on the fused multi-tensor path. Refreshed whenever a mask changes.
        self.multipliers = [m.to(w.dtype) for m, w in zip(self.masks, self.weights)]
        self.active_steps = [torch.zeros_like(w, dtype=torch.int32) for w in self.weights]
        self.counted_until = 0
        self.apply()

    @staticmethod
    def _random_mask(weight: Tensor, count: int, generator: torch.Generator) -> Tensor:
        """Exactly `count` active weights; the mask has the weight's memory format (e.g. channels_last)."""
        scores = torch.rand(weight.shape, generator=generator, device=weight.device)
        flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        flat[torch.topk(scores.flatten(), count).indices] = True
        return torch.zeros_like(weight, dtype=torch.bool).copy_(flat.view(weight.shape))

    @torch.no_grad()
    def apply(self) -> None:
        """Make every inactive weight exactly zero (after each optimizer step)."""
        torch._foreach_mul_(self.weights, self.multipliers)

    def count_active_steps(self, step: int) -> None:
        if step > self.counted_until:
            torch._foreach_add_(self.active_steps, self.masks, alpha=step - self.counted_until)
            self.counted_until = step

    @torch.no_grad()
    def update(self, step: int, drop_fraction: float, acq: SET, optimizer: torch.optim.Optimizer) -> None:
        """Drop k active and grow k previously inactive weights in every layer.

        Grown weights start at zero with zeroed optimizer state; just-dropped weights are not candidates
        for growth in the same update, so every layer keeps exactly its number of active weights.
        """
        self.count_active_steps(step)
        for weight, mask, multiplier, active_steps, count in zip(
            self.weights, self.masks, self.multipliers, self.active_steps, self.counts
        ):
            k = min(round(drop_fraction * count), weight.numel() - count)
            if k == 0:
                continue
            grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            drop_scores = acq.drop_scores(weight).masked_fill(~mask, float("inf"))
            grow_scores = acq.grow_scores(weight, grad, active_steps, step).masked_fill(mask, -float("inf"))
            dropped = torch.topk(drop_scores.flatten(), k, largest=False).indices
            grown = torch.topk(grow_scores.flatten(), k).indices
            flat_mask = mask.flatten().clone()  # logical order, whatever the memory format
            flat_mask[dropped] = False
            flat_mask[grown] = True
            new_mask = flat_mask.view(mask.shape)
            weight.masked_fill_(new_mask ^ mask, 0.0)
            grown_mask = new_mask & ~mask
            for state in optimizer.state.get(weight, {}).values():
                if isinstance(state, Tensor) and state.shape == weight.shape:
                    state.masked_fill_(grown_mask, 0.0)
            mask.copy_(new_mask)
            multiplier.copy_(new_mask)

    def explored_share(self) -> float:
        """Share of prunable weights that have been active at some point so far."""
        explored = sum(((n > 0) | m).sum() for n, m in zip(self.active_steps, self.masks))
        return float(explored) / self.total

    @property
    def total(self) -> int:
        return sum(w.numel() for w in self.weights)

    def nonzero_density(self) -> float:
        """Density measured from the weights themselves (a weight that is exactly 0 counts as inactive)."""
        return float(sum(torch.count_nonzero(w) for w in self.weights)) / self.total

    def layer_report(self) -> dict[str, dict]:
        return {
            name: {
                "numel": w.numel(),
                "target_density": count / w.numel(),
                "density": float(torch.count_nonzero(w)) / w.numel(),
            }
            for name, w, count in zip(self.names, self.weights, self.counts)
        }

    def snapshot(self) -> list[Tensor]:
        return [m.clone() for m in self.masks]

    def turnover_since(self, previous: list[Tensor]) -> float:
        """Share of the active weights that were not active in `previous`."""
        changed = sum((m & ~p).sum() for m, p in zip(self.masks, previous))
        return float(changed) / sum(self.counts)

    def state_dict(self) -> dict:
        return {
            "masks": dict(zip(self.names, self.masks)),
            "active_steps": dict(zip(self.names, self.active_steps)),
            "counted_until": self.counted_until,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for i, name in enumerate(self.names):
            self.masks[i].copy_(state["masks"][name])
            self.multipliers[i].copy_(state["masks"][name])
            self.active_steps[i].copy_(state["active_steps"][name])
        self.counted_until = state["counted_until"]
        self.apply()
