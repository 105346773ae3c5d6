"""SparseEngine: one model's dynamic sparse training, driven by `engine.step()` after `loss.backward()`.

One call of step() = one training iteration: the mask update when one is due (on the dense gradient of this
batch), the optimizer step (unless the schedule skips it on update iterations), inactive weights back to 0.
Where the update sits relative to the optimizer step is the schedule's `update_after_optimizer_step`.
"""
import torch
import torch.distributed as dist
from torch import Tensor, nn

from dst_cli.sparse.acquisition import Acquisition, ScoreContext
from dst_cli.sparse.errors import MasksDiverged
from dst_cli.sparse.masks import SparseMasks, random_mask
from dst_cli.sparse.schedule import UpdateSchedule

DDP_MODES = ("check", "broadcast")


class SparseEngine:
    def __init__(
        self,
        weights: dict[str, nn.Parameter],
        optimizer: torch.optim.Optimizer,
        densities: dict[str, float],
        counts: dict[str, int],
        schedule: UpdateSchedule,
        acq: Acquisition,
        generator: torch.Generator,
        ddp: str = "check",
    ):
        self.names = list(weights)
        self.densities = densities
        self.counts = [counts[name] for name in self.names]
        self.optimizer, self.schedule, self.acq, self.generator, self.ddp = optimizer, schedule, acq, generator, ddp
        initial = {name: random_mask(w, counts[name], generator) for name, w in weights.items()}
        self.masks = SparseMasks(weights, initial, keep_active_steps=acq.needs_active_steps)
        self.step_count = 0        # calls of step() (training iterations seen)
        self.optimizer_steps = 0   # optimizer steps taken (fewer when update iterations skip it)
        self.updates_done = 0
        self.last_update_step = -1
        self.mask_checks = 0       # cross-rank mask agreements enforced (DDP)

    # ----- the per-iteration call -----
    def step(self) -> None:
        """Call after loss.backward(), instead of optimizer.step()."""
        before = not self.schedule.update_after_optimizer_step
        if before and self._update_due(self.optimizer_steps):
            self.update(self.optimizer_steps)
            if self.schedule.skip_optimizer_step_on_update:
                self.step_count += 1
                return
        self.optimizer.step()
        self.masks.apply()
        self.optimizer_steps += 1
        self.step_count += 1
        if not before and self._update_due(self.optimizer_steps):
            self.update(self.optimizer_steps)

    def is_update_step(self, step: int) -> bool:
        """Whether a mask update runs when `step` optimizer steps have been taken."""
        return self.acq.updates_topology and self.schedule.is_update_step(step)

    def _update_due(self, step: int) -> bool:
        return self.is_update_step(step) and step != self.last_update_step

    # ----- the mask update -----
    def _context(self, i: int, step: int) -> ScoreContext:
        weight = self.masks.weights[i]
        state = self.optimizer.state.get(weight, {})
        return ScoreContext(
            name=self.names[i],
            weight=weight.detach(),
            grad=weight.grad.detach() if weight.grad is not None else torch.zeros_like(weight),
            mask=self.masks.masks[i],
            optimizer_state={k: v for k, v in state.items() if isinstance(v, Tensor) and v.shape == weight.shape},
            active_steps=None if self.masks.active_steps is None else self.masks.active_steps[i],
            step=step,
            generator=self.generator,
        )

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Drop k active weights per layer (lowest drop score), then grow the layer's regrowth count among the
        candidates (highest grow score). Candidates: every weight inactive after the drop, just-dropped ones
        included when `regrow_dropped` (RigL TF sparse_optimizers_base.py:293-317; ITOP core.py:320-368);
        else only weights inactive before the update. The count of active weights stays exact."""
        masks, schedule = self.masks, self.schedule
        masks.count_active_steps(step)
        contexts = {name: self._context(i, step) for i, name in enumerate(self.names)}
        kept, dropped = [], {}
        for i, name in enumerate(self.names):
            flat_mask = masks.masks[i].flatten()  # logical order, whatever the memory format
            k = schedule.drop_count(self.counts[i], step)
            if not schedule.regrow_dropped:
                k = min(k, flat_mask.numel() - self.counts[i])
            after_drop = flat_mask.clone()
            if k:
                scores = self.acq.drop_scores(contexts[name]).flatten()
                finite = scores.nan_to_num(nan=torch.finfo(scores.dtype).max)
                after_drop[torch.topk(finite.masked_fill(~flat_mask, float("inf")), k, largest=False).indices] = False
            kept.append(after_drop)
            dropped[name] = k
        grown = self.acq.regrowth_counts(dropped, contexts)
        self._check_regrowth(dropped, grown, kept)
        for i, name in enumerate(self.names):
            new_mask = kept[i]
            if grown[name]:
                ineligible = new_mask if schedule.regrow_dropped else masks.masks[i].flatten()
                scores = self.acq.grow_scores(contexts[name]).flatten()
                finite = scores.nan_to_num(nan=torch.finfo(scores.dtype).min)
                new_mask[torch.topk(finite.masked_fill(ineligible, -float("inf")), grown[name]).indices] = True
            if dropped[name] or grown[name]:
                masks.replace(i, new_mask.view(masks.masks[i].shape), self.optimizer)
            self.counts[i] += grown[name] - dropped[name]
        self.updates_done += 1
        self.last_update_step = step
        self._agree_across_ranks(step)

    def _check_regrowth(self, dropped: dict[str, int], grown: dict[str, int], kept: list[Tensor]) -> None:
        """An acquisition's regrowth_counts must keep the global count exact and fit every layer."""
        who = f"{type(self.acq).__name__}.regrowth_counts"
        if set(grown) != set(dropped) or sum(grown.values()) != sum(dropped.values()):
            raise RuntimeError(f"{who} must return a count for every layer summing to {sum(dropped.values())}, "
                               f"got {grown}")
        for i, name in enumerate(self.names):
            before = self.counts[i] - dropped[name]
            room = kept[i].numel() - before if self.schedule.regrow_dropped else kept[i].numel() - self.counts[i]
            if not 0 <= grown[name] <= room:
                raise RuntimeError(f"{who} gave {name} {grown[name]} weights to grow; it has room for 0..{room}")

    # ----- distributed agreement -----
    def masks_checksum(self) -> Tensor:
        """One int64 per layer that changes when any mask entry moves: sum of position hashes of active entries."""
        sums = []
        for mask in self.masks.masks:
            positions = torch.arange(1, mask.numel() + 1, device=mask.device, dtype=torch.int64)
            sums.append((positions * 2654435761 % 2147483647 * mask.flatten()).sum())
        return torch.stack(sums)

    def _agree_across_ranks(self, step: int) -> None:
        """Under torch.distributed with several ranks: check that every rank holds the same masks (raise
        MasksDiverged naming the step and layers), or make rank 0's masks everyone's."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        if self.ddp == "broadcast":
            for i, mask in enumerate(self.masks.masks):
                shared = mask.to(torch.uint8)
                dist.broadcast(shared, src=0)
                self.masks.replace(i, shared.bool(), self.optimizer)
            self.counts = self.masks.active_counts()
        else:
            local = self.masks_checksum()
            gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, local)
            differs = (torch.stack(gathered) != gathered[0]).any(dim=0).tolist()
            layers = [name for name, bad in zip(self.names, differs) if bad]
            if layers:
                raise MasksDiverged(f"the ranks' masks differ after the mask update at step {step} "
                                    f"(layers: {', '.join(layers)})")
        self.mask_checks += 1

    # ----- measurements -----
    def dense_gradient_updates(self, steps: int) -> int:
        """Mask updates within the first `steps` iterations that needed a dense gradient (for FLOPs)."""
        if not (self.acq.updates_topology and self.acq.uses_gradient):
            return 0
        return self.schedule.updates_within(steps)

    def mark_epoch(self) -> None:
        """Remember the current masks (1 bit per weight) as the reference of `turnover`."""
        self.masks.epoch_start = self.masks.packed()

    def stats(self) -> dict:
        """Measured density, explored share, turnover since mark_epoch() and the per-layer table (syncs)."""
        masks = self.masks
        return {
            "density": masks.nonzero_density(),
            "explored": masks.explored_share(),
            "turnover": masks.turnover(),
            "layers": {
                name: {
                    "shape": list(w.shape),
                    "numel": w.numel(),
                    "active": count,
                    "target_density": count / w.numel(),
                    "density": float(torch.count_nonzero(w)) / w.numel(),
                }
                for name, w, count in zip(self.names, masks.weights, self.counts)
            },
        }

    # ----- checkpoints -----
    def state_dict(self) -> dict:
        return {
            **self.masks.state_dict(),
            "counts": dict(zip(self.names, self.counts)),
            "generator": self.generator.get_state(),
            "step_count": self.step_count,
            "optimizer_steps": self.optimizer_steps,
            "updates_done": self.updates_done,
            "last_update_step": self.last_update_step,
            "mask_checks": self.mask_checks,
        }

    def load_state_dict(self, state: dict) -> None:
        self.masks.load_state_dict(state)
        self.counts = [state["counts"][name] for name in self.names]
        self.generator.set_state(state["generator"])
        self.step_count, self.optimizer_steps = state["step_count"], state["optimizer_steps"]
        self.updates_done, self.last_update_step = state["updates_done"], state["last_update_step"]
        self.mask_checks = state["mask_checks"]
