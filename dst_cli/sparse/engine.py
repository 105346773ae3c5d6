"""SparseEngine: one model's dynamic sparse training, driven by `engine.step()` after `loss.backward()`.

One call of step() = one training iteration: the mask update when one is due (on the dense gradient of this
batch), the optimizer step (unless the schedule skips it on update iterations), inactive weights back to 0.
Where the update sits relative to the optimizer step is the schedule's `update_after_optimizer_step`.
"""
from typing import Literal, get_args

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dst_cli.sparse.acquisition import Acquisition, ScoreContext
from dst_cli.sparse.backend import BackendUnavailable, attach_backend
from dst_cli.sparse.errors import MasksDiverged, SparseConfigError
from dst_cli.sparse.flops import training_flops_ratio
from dst_cli.sparse.init import Init
from dst_cli.sparse.masks import SparseMasks, active_positions, finite_scores, lowest, weight_state
from dst_cli.sparse.schedule import UpdateSchedule

DDPMode = Literal["check", "broadcast"]
DDP_MODES = get_args(DDPMode)
Backend = Literal["masked", "sparse", "auto"]
BACKENDS = get_args(Backend)
ENGINE_COUNTERS = ("step_count", "optimizer_steps", "updates_done", "last_update_step", "mask_checks",
                   "integrated_until", "dense_gradient_iterations")
ENGINE_STATE_KEYS = ("counts", "generator", "active_sums", "dense_gradient_sums", *ENGINE_COUNTERS)


class SparseEngine:
    """Built by `sparsify`. `masks`: the initial bool mask of every weight (its count of active weights is
    kept exactly, except by gradual pruning); `dense_layers`: layers kept dense by the user, left out of
    gradual pruning; `final_density`: the density gradual pruning ends at (1 - sparsity); `init` and
    `distribution`: how the initial masks were made (shown by repr)."""

    def __init__(
        self,
        weights: dict[str, nn.Parameter],
        optimizer: torch.optim.Optimizer,
        masks: dict[str, Tensor],
        schedule: UpdateSchedule,
        acq: Acquisition,
        generator: torch.Generator,
        ddp: str = "check",
        dense_layers: frozenset[str] = frozenset(),
        final_density: float = 1.0,
        init: Init | None = None,
        distribution: str | None = None,
    ):
        self.names = list(weights)
        self.init, self.distribution = init, distribution
        self.backend_mode, self.backend, self.compute_reason = "masked", None, None  # use_backend changes them
        self.optimizer, self.schedule, self.acq, self.generator, self.ddp = optimizer, schedule, acq, generator, ddp
        self.final_density = final_density
        self.pruned_layers = [i for i, name in enumerate(self.names) if name not in dense_layers]
        self.masks = SparseMasks(weights, masks, keep_active_steps=acq.needs_active_steps)
        self.counts = self.masks.active_counts()
        self.densities = self._densities()
        self.step_count = 0        # calls of step() (training iterations seen)
        self.optimizer_steps = 0   # optimizer steps taken (fewer when update iterations skip it)
        self.updates_done = 0
        self.last_update_step = -1
        self.mask_checks = 0       # cross-rank mask agreements enforced (DDP)
        # Exact integrals for the training FLOPs, in Python ints: per layer, the active weights summed over the
        # iterations up to `integrated_until` (each iteration's forward/backward runs on the masks in force
        # before any update of that iteration), and summed over the iterations that needed a dense gradient.
        self.active_sums = [0] * len(self.names)
        self.integrated_until = 0
        self.dense_gradient_sums = [0] * len(self.names)
        self.dense_gradient_iterations = 0

    # ----- how the sparse layers compute -----
    def use_backend(self, model: nn.Module, backend: str) -> None:
        """Run the model's sparse layers on `backend`: "masked" (dense kernels on the masked weights), "sparse"
        (forward and backward on the active weights only: dst_cli.sparse.backend) or "auto" (per layer the
        faster of the two, timed at its first forward). The engine then drives it: before every training
        forward the layers run masked exactly when this step's update reads the dense gradient
        (needs_dense_gradient), and the compressed layers are rebuilt after every mask change. Where the sparse
        path cannot run, "sparse" raises SparseConfigError and "auto" stays masked, saying why in
        `compute_reason`."""
        self.backend_mode, self.backend, self.compute_reason = backend, None, None
        if backend == "masked":
            return
        reason = self._masked_only_reason()
        if reason is None:
            try:
                self.backend = attach_backend(model, dict(zip(self.names, self.masks.weights)), self.live_masks(),
                                              mode=backend)
            except BackendUnavailable as error:
                reason = str(error)
        if reason is not None and backend == "sparse":
            raise SparseConfigError("backend", f"backend=sparse cannot run here: {reason}; allowed: backend=masked "
                                    "or backend=auto (which then stays masked)")
        self.compute_reason = reason or self.backend.reason
        if self.backend is not None:
            model.register_forward_pre_hook(self._before_forward)

    def _masked_only_reason(self) -> str | None:
        device = self.masks.weights[0].device
        if device.type != "cpu":
            return f"the sparse kernels run on the CPU (the weights are on {device.type})"
        if self.acq.dense_gradient_every_step:
            return f"acq={self.acq.name or type(self.acq).__name__} reads the dense gradient at every step, so " \
                   "every step runs masked and there is nothing to gain"
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return "with several processes the sparse gradients would miss DDP's all-reduce"
        return None

    def live_masks(self) -> dict[str, Tensor]:
        """The engine's own bool masks by layer (not copies: for the compute backend, rebuilt from them)."""
        return dict(zip(self.names, self.masks.masks))

    def needs_dense_gradient(self) -> bool:
        """Whether the coming step() reads this iteration's dense gradient: at every step for an acquisition
        that always needs it (SNFS's momentum), else at the steps whose mask update grows by the gradient
        (rigl, ee). Mirrors step(): an update after the optimizer step is due at optimizer_steps + 1."""
        if self.acq.dense_gradient_every_step:
            return True
        if not self.acq.uses_gradient:
            return False
        step = self.optimizer_steps + (1 if self.schedule.update_after_optimizer_step else 0)
        return self._update_due(step)

    def _before_forward(self, module: nn.Module, inputs) -> None:
        self.backend.use_masked(module.training and self.needs_dense_gradient())

    def _densities(self) -> dict[str, float]:
        """Each layer's density from its exact count (SNFS, DSR and gradual pruning move counts)."""
        return {name: count / w.numel() for name, w, count in zip(self.names, self.masks.weights, self.counts)}

    def __repr__(self) -> str:
        total = self.masks.total
        return (f"SparseEngine({len(self.names)} layers, {sum(self.counts)}/{total} weights active "
                f"({sum(self.counts) / total:.2%}), distribution={self.distribution}, acq={self.acq!r}, "
                f"init={self.init!r}, schedule={self.schedule}, backend={self.backend_mode}, step {self.step_count}, "
                f"{self.updates_done} updates)")

    # ----- reading the masks -----
    def mask(self, name: str) -> Tensor:
        """A copy of layer `name`'s bool mask (the weight's shape); changing it does not change the engine."""
        if name not in self.names:
            raise KeyError(f"{name!r} is not a sparse layer; the sparse layers: {', '.join(self.names)}")
        return self.masks.masks[self.names.index(name)].clone()

    def masks_by_name(self) -> dict[str, Tensor]:
        """Copies of every sparse layer's bool mask, by layer name, in module order."""
        return {name: mask.clone() for name, mask in zip(self.names, self.masks.masks)}

    # ----- the per-iteration call -----
    def step(self) -> None:
        """Call after loss.backward(), instead of optimizer.step().

        An iteration whose mask update drops and grows needs every sparse weight's gradient: without one
        (no backward pass, or a layer the loss does not reach) it raises ValueError naming the layers and
        changes nothing (see _check_gradients). Other iterations do not look at the gradients."""
        before = not self.schedule.update_after_optimizer_step
        update_at = self.optimizer_steps if before else self.optimizer_steps + 1
        due = self._update_due(update_at)  # Python ints only: no host sync on the steps without an update
        if due:
            self._check_gradients(update_at)
        self.step_count += 1  # this iteration (its forward and backward ran on the current masks)
        if before and due:
            self.update(update_at)
            if self.schedule.skip_optimizer_step_on_update:
                return
        self.optimizer.step()
        self.masks.apply()
        self.optimizer_steps += 1
        if not before and due:
            self.update(update_at)

    def _check_gradients(self, step: int) -> None:
        """Refuse an update that would run on missing gradients, before anything changes.

        The rule is one for every acquisition: the drop-and-grow needs each sparse weight's .grad. RigL and
        EE grow by it, SNFS by the momentum the gradients build (and by the gradient itself at its first
        update), MEST with lam > 0 drops by it; SET, random, DSR and MEST with lam = 0 do not read it, but
        an iteration without a backward pass is a mistake for them too, and a user acquisition may read
        ctx.grad without declaring uses_gradient. An update that only prunes (acq=static with gradual
        pruning) reads |w| alone and is not checked. A layer that never gets a gradient (frozen, or not
        reached by the loss) must be left out of the sparse layers (sparsify's `prunable`)."""
        if not self.acq.updates_topology:
            return
        missing = [name for name, weight in zip(self.names, self.masks.weights) if weight.grad is None]
        if missing:
            raise ValueError(
                f"engine.step() at optimizer step {step} runs a mask update, but layer"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} ha{'ve' if len(missing) > 1 else 's'} "
                "no gradient (.grad is None); allowed: call loss.backward() before engine.step() "
                "(nothing was changed)")

    def is_update_step(self, step: int) -> bool:
        """Whether a mask update runs when `step` optimizer steps have been taken."""
        changes = self.acq.updates_topology or self.schedule.initial_density is not None
        return changes and self.schedule.is_update_step(step)

    def _update_due(self, step: int) -> bool:
        return self.is_update_step(step) and step != self.last_update_step

    # ----- the mask update -----
    def _context(self, i: int, step: int) -> ScoreContext:
        weight = self.masks.weights[i]
        return ScoreContext(
            name=self.names[i],
            weight=weight.detach(),
            grad=weight.grad.detach() if weight.grad is not None else torch.zeros_like(weight),
            mask=self.masks.masks[i],
            optimizer_state=weight_state(self.optimizer, weight),
            active_steps=None if self.masks.active_steps is None else self.masks.active_steps[i],
            step=step,
            generator=self.generator,
        )

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Gradual pruning when due, then drop k active weights per layer (lowest drop score; the counts may
        be moved between layers, or lowered, by the acquisition's drop_counts), then grow the layer's
        regrowth count among the candidates (highest grow score). Candidates: every weight inactive after the drop, just-dropped
        ones included when `regrow_dropped` (RigL TF sparse_optimizers_base.py:293-317; ITOP core.py:320-368);
        else only weights inactive before the update. The count of active weights stays exact."""
        self.masks.count_active_steps(step)
        self._integrate_active_counts()
        self._prune_gradually(step)
        if self.acq.updates_topology:
            self._drop_and_grow(step)
        self.updates_done += 1
        self.last_update_step = step
        self._agree_across_ranks(step)
        self.densities = self._densities()
        if self.backend is not None:
            self.backend.rebuild(self.live_masks())

    def _drop_and_grow(self, step: int) -> None:
        masks, schedule = self.masks, self.schedule
        contexts = {name: self._context(i, step) for i, name in enumerate(self.names)}
        planned = {}
        for i, name in enumerate(self.names):
            k = schedule.drop_count(self.counts[i], step)
            planned[name] = k if schedule.regrow_dropped else min(k, masks.weights[i].numel() - self.counts[i])
        dropped = self.acq.drop_counts(planned, contexts)
        self._check_drops(planned, dropped)
        kept = [self._drop(i, contexts[name], dropped[name]) for i, name in enumerate(self.names)]
        room = {name: masks.weights[i].numel() - self.counts[i] + (dropped[name] if schedule.regrow_dropped else 0)
                for i, name in enumerate(self.names)}
        grown = self.acq.regrowth_counts(dropped, contexts, room)
        self._check_regrowth(dropped, grown, room)
        for i, name in enumerate(self.names):
            new_mask = kept[i]
            if grown[name]:
                ineligible = new_mask if schedule.regrow_dropped else masks.masks[i].flatten()
                scores = self.acq.grow_scores(contexts[name]).flatten()
                finite = scores.nan_to_num(nan=torch.finfo(scores.dtype).min)  # and ±inf to the finite extremes
                # ties to the earlier position, as TF's top_k in RigL TF sparse_optimizers_base.py:311; torch.topk
                # leaves them to its implementation, so rounding elsewhere (another backend) changed the choice
                new_mask |= lowest(-finite.masked_fill(ineligible, -float("inf")), grown[name])
            if dropped[name] or grown[name]:
                masks.replace(i, new_mask.view(masks.masks[i].shape), self.optimizer)
            self.counts[i] += grown[name] - dropped[name]

    def _drop(self, i: int, ctx: ScoreContext, k: int) -> Tensor:
        """Layer i's flat mask without its k active weights of lowest drop score (ties: earlier position).
        Only the active weights are ranked: the same choice as ranking all weights with the inactive last."""
        after_drop = self.masks.masks[i].flatten().clone()  # logical order, whatever the memory format
        if k:
            active = active_positions(ctx.mask, self.counts[i])
            scores = finite_scores(self.acq.drop_scores(ctx).flatten()[active])
            after_drop.index_put_((active,), ~lowest(scores, k))
        return after_drop

    def _prune_gradually(self, step: int) -> None:
        """GraNet's gradual magnitude pruning (core.py:367-413): keep exactly the planned number of the
        sparse layers' weights, those of largest |w| across the layers (ties: the earlier layer and position
        are pruned first); pruned weights and their optimizer state become 0 (apply_mask, core.py:528-535)."""
        layers, masks = self.pruned_layers, self.masks
        planned = self.schedule.planned_active(step, sum(masks.weights[i].numel() for i in layers),
                                               self.final_density)
        active_now = sum(self.counts[i] for i in layers)
        if planned is None or planned >= active_now:
            return
        positions = [active_positions(masks.masks[i], self.counts[i]) for i in layers]
        magnitudes = [finite_scores(masks.weights[i].detach().flatten()[p].abs()) for i, p in zip(layers, positions)]
        pruned = lowest(torch.cat(magnitudes), active_now - planned).split([p.numel() for p in positions])
        for i, where, cut in zip(layers, positions, pruned):
            new_mask = masks.masks[i].flatten().clone()
            new_mask.index_put_((where,), ~cut)
            masks.replace(i, new_mask.view(masks.masks[i].shape), self.optimizer, reset_left=True)
        for i, count in zip(layers, torch.stack([cut.sum() for cut in pruned]).tolist()):
            self.counts[i] -= count

    def _check_drops(self, planned: dict[str, int], dropped: dict[str, int]) -> None:
        """An acquisition's drop_counts may move the plan between layers or lower it (SNFS's dense layers),
        never raise its total, and drop only active weights."""
        who = f"{type(self.acq).__name__}.drop_counts"
        if set(dropped) != set(planned) or sum(dropped.values()) > sum(planned.values()):
            raise RuntimeError(f"{who} must return a count for every layer summing to at most "
                               f"{sum(planned.values())}, got {dropped}")
        for i, name in enumerate(self.names):
            if not 0 <= dropped[name] <= self.counts[i]:
                raise RuntimeError(f"{who} gave {name} {dropped[name]} weights to drop; it has 0..{self.counts[i]}")

    def _check_regrowth(self, dropped: dict[str, int], grown: dict[str, int], room: dict[str, int]) -> None:
        """An acquisition's regrowth_counts must keep the global count exact and fit every layer."""
        who = f"{type(self.acq).__name__}.regrowth_counts"
        if set(grown) != set(dropped) or sum(grown.values()) != sum(dropped.values()):
            raise RuntimeError(f"{who} must return a count for every layer summing to {sum(dropped.values())}, "
                               f"got {grown}")
        for name in self.names:
            if not 0 <= grown[name] <= room[name]:
                raise RuntimeError(f"{who} gave {name} {grown[name]} weights to grow; it has room for 0..{room[name]}")

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
                # each rank zeroed and reset what its own update changed: rank 0's values make one model again
                weight = self.masks.weights[i]
                for tensor in (weight, *weight_state(self.optimizer, weight).values(), self.masks.explored[i]):
                    dist.broadcast(tensor, src=0)
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
    def _integrate_active_counts(self) -> None:
        """Before the counts change: add the current counts for every iteration since the last call, and for
        this iteration's dense gradient when the update reads one."""
        elapsed = self.step_count - self.integrated_until
        self.active_sums = [total + count * elapsed for total, count in zip(self.active_sums, self.counts)]
        self.integrated_until = self.step_count
        if self.acq.updates_topology and self.acq.uses_gradient and not self.acq.dense_gradient_every_step:
            self.dense_gradient_sums = [total + count for total, count in zip(self.dense_gradient_sums, self.counts)]
            self.dense_gradient_iterations += 1

    def mean_densities(self) -> dict[str, float]:
        """Each layer's density averaged over the iterations so far (exact: gradual pruning, SNFS and DSR move
        counts during a run); the current densities before the first iteration."""
        if self.step_count == 0:
            return dict(self.densities)
        elapsed = self.step_count - self.integrated_until
        return {name: (total + count * elapsed) / (self.step_count * w.numel())
                for name, w, total, count in zip(self.names, self.masks.weights, self.active_sums, self.counts)}

    def training_flops_ratio(self, layer_flops: dict[str, int]) -> float:
        """Training FLOPs of the iterations so far relative to dense training of as many iterations, integrated
        exactly over the per-iteration densities (RigL's accounting, dst_cli.sparse.flops)."""
        if self.acq.dense_gradient_every_step:
            densities = self.mean_densities()
            return training_flops_ratio(layer_flops, densities, self.step_count, self.step_count, densities)
        dense_gradient_densities = {
            name: total / (max(self.dense_gradient_iterations, 1) * w.numel())
            for name, w, total in zip(self.names, self.masks.weights, self.dense_gradient_sums)
        }
        return training_flops_ratio(layer_flops, self.mean_densities(), self.step_count,
                                    self.dense_gradient_iterations, dense_gradient_densities)

    def state_bytes_per_weight(self) -> float:
        """Bytes of engine state per prunable weight, from the tensors held (masks, explored flags, the
        mark_epoch snapshot, N counters when the acquisition needs them)."""
        return self.masks.state_bytes() / self.masks.total

    def mark_epoch(self) -> None:
        """Remember the current masks (1 bit per weight) as the reference of `turnover`."""
        self.masks.epoch_start = self.masks.packed()

    def stats(self, per_layer: bool = True) -> dict:
        """Measured density, explored share, turnover since mark_epoch() and, with `per_layer`, the per-layer
        table (syncs). `summary()` gives the same figures as one line."""
        masks = self.masks
        totals = {
            "density": masks.nonzero_density(),
            "explored": masks.explored_share(),
            "turnover": masks.turnover(),
        }
        if not per_layer:
            return totals
        kernels = self.backend.kernels if self.backend is not None else {}
        return {
            **totals,
            "backend": self.compute_summary(),
            "layers": {
                name: {
                    "shape": list(w.shape),
                    "numel": w.numel(),
                    "active": count,
                    "target_density": count / w.numel(),
                    "density": float(torch.count_nonzero(w)) / w.numel(),
                    "kernel": kernels.get(name, "masked"),
                }
                for name, w, count in zip(self.names, masks.weights, self.counts)
            },
        }

    def compute_summary(self) -> str:
        """How the sparse layers compute, in one line (with the reason when the sparse path cannot run)."""
        if self.backend is not None:
            return self.backend.summary()
        return f"{self.backend_mode}" + (f" (masked: {self.compute_reason})" if self.compute_reason else "")

    def summary(self) -> str:
        """One line: measured density, explored share, turnover, updates and steps."""
        stats = self.stats(per_layer=False)
        return (f"density {stats['density']:.2%}, explored {stats['explored']:.2%}, turnover {stats['turnover']:.2%}, "
                f"{self.updates_done} updates in {self.step_count} steps")

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
            "active_sums": dict(zip(self.names, self.active_sums)),
            "integrated_until": self.integrated_until,
            "dense_gradient_sums": dict(zip(self.names, self.dense_gradient_sums)),
            "dense_gradient_iterations": self.dense_gradient_iterations,
        }

    def check_state(self, state: dict) -> None:
        """Raise ValueError (one line) unless `state` is a state_dict() of an engine over these layers: every
        key present, the masks' names, shapes and dtypes (SparseMasks.check_state), each layer's recorded count
        equal to its mask's count of active weights, the per-layer sums for these layers, the counters
        integers, the generator state one this engine's generator accepts."""
        if not isinstance(state, dict):
            raise ValueError(f"the state is a {type(state).__name__}; allowed: a dict from SparseEngine.state_dict()")
        self.masks.check_state(state)
        missing = [key for key in ENGINE_STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"the state lacks {', '.join(missing)}; allowed: a state_dict() of a SparseEngine")
        for key in ("counts", "active_sums", "dense_gradient_sums"):
            given = state[key]
            if not isinstance(given, dict) or set(given) != set(self.names):
                shown = sorted(given) if isinstance(given, dict) else type(given).__name__
                raise ValueError(f"the state's {key} are of layers {shown}; this engine has {self.names}")
            for name, value in given.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"the state's {key} of {name} is {value!r}; allowed: an integer >= 0")
        actual = torch.stack([state["masks"][name].sum() for name in self.names]).tolist()  # one sync
        for name, count in zip(self.names, actual):
            if state["counts"][name] != count:
                raise ValueError(f"the state records {state['counts'][name]} active weights for {name} but its mask "
                                 f"holds {count}; allowed: a state whose counts match its masks")
        for key in ENGINE_COUNTERS:
            value, low = state[key], -1 if key == "last_update_step" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"the state's {key}={value!r} is invalid; allowed: an integer >= {low}")
        try:  # on a generator of our device: ours is left as it is when the state does not fit
            torch.Generator(self.generator.device).set_state(state["generator"])
        except (TypeError, RuntimeError) as error:
            raise ValueError(f"the state's generator state does not fit this engine's {self.generator.device} "
                             f"generator ({str(error).splitlines()[0]})") from None

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state` (a state_dict()): all of it, or nothing (check_state raises ValueError first)."""
        self.check_state(state)
        self.masks.load_state_dict(state)
        self.counts = [state["counts"][name] for name in self.names]
        self.densities = self._densities()
        self.generator.set_state(state["generator"])
        self.step_count, self.optimizer_steps = state["step_count"], state["optimizer_steps"]
        self.updates_done, self.last_update_step = state["updates_done"], state["last_update_step"]
        self.mask_checks = state["mask_checks"]
        self.active_sums = [state["active_sums"][name] for name in self.names]
        self.dense_gradient_sums = [state["dense_gradient_sums"][name] for name in self.names]
        self.integrated_until = state["integrated_until"]
        self.dense_gradient_iterations = state["dense_gradient_iterations"]
        if self.backend is not None:
            self.backend.rebuild(self.live_masks())
