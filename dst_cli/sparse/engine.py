"""Dynamic sparse training of one model: masks + update schedule + acquisition function.

The trainer calls two hooks per step, in this order:
    loss.backward(); engine.before_optimizer_step(step); optimizer.step(); engine.after_optimizer_step()
so a mask update sees the dense gradient of the current batch, and grown weights take their first
optimizer step right away with fresh optimizer state.
"""
import torch
from torch import nn

from dst_cli.sparse.acquisition import SET
from dst_cli.sparse.distribution import active_counts, layer_densities
from dst_cli.sparse.masks import SparseMasks, prunable_weights
from dst_cli.sparse.schedule import UpdateSchedule


class SparseEngine:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sparsity: float,
        distribution: str,
        schedule: UpdateSchedule,
        acq: SET,
        generator: torch.Generator,
        dense_first_layer: bool = False,
        dense_last_layer: bool = False,
    ):
        weights = prunable_weights(model)
        names = list(weights)
        dense = {names[0]} if dense_first_layer else set()
        if dense_last_layer:
            dense.add(names[-1])
        shapes = {name: tuple(w.shape) for name, w in weights.items()}
        self.densities = layer_densities(shapes, 1.0 - sparsity, distribution, frozenset(dense))
        self.masks = SparseMasks(weights, active_counts(shapes, self.densities), generator)
        self.optimizer = optimizer
        self.schedule = schedule
        self.acq = acq
        self.generator = generator

    def is_update_step(self, step: int) -> bool:
        return self.acq.updates_topology and self.schedule.is_update_step(step)

    def before_optimizer_step(self, step: int) -> None:
        if self.is_update_step(step):
            self.masks.update(step, self.schedule.drop_fraction_at(step), self.acq, self.optimizer)

    def after_optimizer_step(self) -> None:
        self.masks.apply()

    def dense_gradient_updates(self, steps: int) -> int:
        """Mask updates within the first `steps` steps that needed a dense gradient (for FLOPs)."""
        if not (self.acq.updates_topology and self.acq.uses_gradient):
            return 0
        return self.schedule.count_updates(steps)

    def state_dict(self) -> dict:
        return {**self.masks.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.masks.load_state_dict(state)
        self.generator.set_state(state["generator"])
