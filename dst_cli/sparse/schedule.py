"""When the topology changes and by how much: pure functions of the step, and the presets of the references.

Steps are counted as optimizer steps taken: "an update at t" runs when exactly t optimizer steps have been
taken, whether it comes before the (t+1)-th optimizer step or right after the t-th one.
"""
import math
from dataclasses import dataclass, fields, replace

from dst_cli.sparse.errors import SparseConfigError, check_bool, check_choice, check_int, check_number

DECAYS = ("cosine", "linear", "constant")
ROUNDINGS = ("round", "int", "ceil")


@dataclass(frozen=True)
class UpdateSchedule:
    """Mask updates every `update_interval` steps until `stop_fraction` of training, and how each one runs.

    The share of active weights replaced at an update decays from `drop_fraction` to `min_drop_fraction`
    over the updating part of training (`decay` cosine | linear | constant).

    Fidelity switches (see the presets for the references' values):
      regrow_dropped: a weight dropped in this update may be regrown in it (keeping its value and optimizer
          state), as in every reference; False: exactly k previously inactive weights enter.
      skip_optimizer_step_on_update: an update iteration replaces the optimizer step (RigL TF).
      update_at_step0: update before the first optimizer step too (RigL TF).
      update_after_optimizer_step: the update follows the optimizer step and the masking of that iteration
          (ITOP/sparselearning); False: it precedes the optimizer step, on the same dense gradient.
      rounding: k = round | int | ceil of drop_fraction * active weights.
    """

    total_steps: int
    update_interval: int = 1000
    drop_fraction: float = 0.5
    decay: str = "cosine"
    min_drop_fraction: float = 0.0
    stop_fraction: float = 1.0
    regrow_dropped: bool = True
    skip_optimizer_step_on_update: bool = False
    update_at_step0: bool = False
    update_after_optimizer_step: bool = False
    rounding: str = "round"

    def __post_init__(self):
        check_int("total_steps", self.total_steps, 1)
        check_int("schedule.update_interval", self.update_interval, 1)
        check_number("schedule.drop_fraction", self.drop_fraction, 0.0, 1.0)
        check_number("schedule.min_drop_fraction", self.min_drop_fraction, 0.0, self.drop_fraction)
        check_number("schedule.stop_fraction", self.stop_fraction, 0.0, 1.0)
        check_choice("schedule.decay", self.decay, DECAYS)
        check_choice("schedule.rounding", self.rounding, ROUNDINGS)
        for switch in ("regrow_dropped", "skip_optimizer_step_on_update", "update_at_step0",
                       "update_after_optimizer_step"):
            check_bool(f"schedule.{switch}", getattr(self, switch))
        if self.update_after_optimizer_step and (self.skip_optimizer_step_on_update or self.update_at_step0):
            raise SparseConfigError(
                "schedule.update_after_optimizer_step",
                "schedule.update_after_optimizer_step=True cannot be combined with skip_optimizer_step_on_update "
                "or update_at_step0 (both need the update before the optimizer step); allowed: one or the other",
            )

    @property
    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)

    def is_update_step(self, step: int) -> bool:
        """An update at `step` optimizer steps taken: every interval, up to and including the stop step
        (RigL TF sparse_optimizers_base.py:216-226), never after the last optimizer step of the run."""
        if step % self.update_interval or (step == 0 and not self.update_at_step0):
            return False
        return step <= self.stop_step and step < self.total_steps

    def drop_fraction_at(self, step: int) -> float:
        """RigL TF: cosine_decay(drop_fraction, step, end_step) (sparse_optimizers_base.py:236-242);
        ITOP: CosineAnnealingLR(death_rate, T_max=total, eta_min=0.005) stepped once per optimizer step
        (sparselearning/core.py:22-31, 215-216)."""
        progress = min(step / max(self.stop_step, 1), 1.0)
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.decay == "linear":
            factor = 1.0 - progress
        else:
            factor = 1.0
        return self.min_drop_fraction + (self.drop_fraction - self.min_drop_fraction) * factor

    def drop_count(self, active: int, step: int) -> int:
        """k of one layer: RigL TF int(n_ones * drop_fraction) (sparse_optimizers_base.py:287-289);
        ITOP math.ceil(death_rate * nonzeros) (sparselearning/core.py:391)."""
        exact = self.drop_fraction_at(step) * active
        k = {"round": round, "int": int, "ceil": math.ceil}[self.rounding](exact)
        return min(k, active)

    def update_steps(self) -> range:
        """Every step at which an update runs, in order."""
        first = 0 if self.update_at_step0 else self.update_interval
        last = min(self.stop_step, self.total_steps - 1)
        return range(first, last + 1, self.update_interval)

    def updates_within(self, iterations: int) -> int:
        """How many updates run within the first `iterations` calls of engine.step() (for FLOPs).

        With skipped optimizer steps the j-th update (from 0) runs at iteration t + j, because every earlier
        update used an iteration without an optimizer step; after the optimizer step it runs at iteration t - 1.
        """
        if self.update_after_optimizer_step:
            return sum(1 for t in self.update_steps() if t - 1 < iterations)
        lag = 1 if self.skip_optimizer_step_on_update else 0
        return sum(1 for j, t in enumerate(self.update_steps()) if t + j * lag < iterations)


SCHEDULE_OPTIONS = tuple(f.name for f in fields(UpdateSchedule) if f.name != "total_steps")

SCHEDULE_PRESETS: dict[str, dict] = {
    # RigL's TF code (google-research/rigl): masks updated every 100 steps from step 0
    # (last_mask_update_step starts at -frequency: sparse_optimizers_base.py:164-171) to end_step
    # (imagenet_train_eval.py:242-244: every 100 steps, end 25000 = 75% of the paper's 32000 ImageNet steps);
    # drop 0.3 cosine-decayed to 0 (imagenet_train_eval.py:224, sparse_optimizers_base.py:236-242);
    # an update iteration runs the mask update *instead of* the optimizer step (SparseRigLOptimizerBase.
    # apply_gradients: cond(is_mask_update_iter, mask_update_op, apply_gradient_op), :487-521);
    # k = int(n_ones * drop_fraction) (:287-289); the grow candidates are all weights not kept after the drop,
    # so just-dropped weights can be regrown (:305-310) and keep their value and momentum (:331-337).
    "rigl": dict(update_interval=100, drop_fraction=0.3, decay="cosine", min_drop_fraction=0.0,
                 stop_fraction=0.75, regrow_dropped=True, skip_optimizer_step_on_update=True,
                 update_at_step0=True, update_after_optimizer_step=False, rounding="int"),
    # ITOP / sparselearning (Shiweiliuiiiiiii/In-Time-Over-Parameterization, sparselearning/core.py):
    # Masking.step() = optimizer.step(); apply_mask(); decay.step(); steps += 1; then, every
    # update_frequency steps, truncate_weights() (:212-223), on the gradient of the current batch;
    # death rate 0.5 cosine-annealed to 0.005 over the whole run (CosineDecay(death_rate,
    # len(train_loader) * epochs), main.py:270, core.py:22-31); update every 1000 steps as in the DST-EE and
    # GraNet CIFAR recipes (the ITOP README's commands use 1500-4000: override update_interval);
    # num_remove = ceil(death_rate * nonzeros) (:391); growth picks among new_mask == 0, which includes the
    # weights just dropped (:344-366, :477-485), and those keep their value and momentum.
    "itop": dict(update_interval=1000, drop_fraction=0.5, decay="cosine", min_drop_fraction=0.005,
                 stop_fraction=1.0, regrow_dropped=True, skip_optimizer_step_on_update=False,
                 update_at_step0=False, update_after_optimizer_step=True, rounding="ceil"),
}


def check_schedule_options(options: dict) -> None:
    for key in options:
        if key not in SCHEDULE_OPTIONS:
            raise SparseConfigError(key, f"{key} is not a schedule option; allowed: {', '.join(SCHEDULE_OPTIONS)}")


def schedule_preset(name: str, total_steps: int, **overrides) -> UpdateSchedule:
    """The preset `name` (rigl | itop) for a run of `total_steps` steps, with any field overridden."""
    check_choice("schedule", name, tuple(SCHEDULE_PRESETS))
    check_schedule_options(overrides)
    return UpdateSchedule(total_steps=total_steps, **{**SCHEDULE_PRESETS[name], **overrides})


def resolve_schedule(schedule: "str | UpdateSchedule", total_steps: int, overrides: dict) -> UpdateSchedule:
    if isinstance(schedule, UpdateSchedule):
        check_schedule_options(overrides)
        return replace(schedule, total_steps=total_steps, **overrides)
    return schedule_preset(schedule, total_steps, **overrides)
