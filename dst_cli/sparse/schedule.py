"""When the topology changes and by how much: pure functions of the step, and the presets of the references.

Steps are counted as optimizer steps taken: "an update at t" runs when exactly t optimizer steps have been
taken, whether it comes before the (t+1)-th optimizer step or right after the t-th one.
"""
import math
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

from dst_cli.sparse.errors import SparseConfigError, check_bool, check_choice, check_int, check_number

Decay = Literal["cosine", "linear", "constant"]
Rounding = Literal["round", "int", "ceil"]
DECAYS, ROUNDINGS = get_args(Decay), get_args(Rounding)
COUNT_TOLERANCE = 1e-6  # weights; float error of a count below 1e8 weights is far smaller


@dataclass(frozen=True, repr=False)
class UpdateSchedule:
    """Mask updates every `update_interval` steps until `stop_fraction` of training, and how each one runs.

    The share of active weights replaced at an update decays from `drop_fraction` to `min_drop_fraction`
    over the updating part of training (`decay` cosine | linear | constant).

    update_interval: optimizer steps between mask updates
    drop_fraction: share of each layer's active weights replaced at the first update
    decay: how the drop fraction decays over training (cosine | linear | constant)
    min_drop_fraction: drop fraction at the end of the decay (at most drop_fraction)
    stop_fraction: share of training after which the topology freezes
    initial_density: gradual pruning (schedule=gradual): the density at the start; null: no gradual pruning
    prune_start_fraction: gradual pruning: share of training where pruning starts
    prune_end_fraction: gradual pruning: share of training where the final density is reached

    Fidelity switches (see the presets for the references' values):
      regrow_dropped: a weight dropped in this update may be regrown in it (keeping its value and optimizer
          state), as in every reference; False: exactly k previously inactive weights enter.
      skip_optimizer_step_on_update: an update iteration replaces the optimizer step (RigL TF).
      update_at_step0: update before the first optimizer step too (RigL TF).
      update_after_optimizer_step: the update follows the optimizer step and the masking of that iteration
          (ITOP/sparselearning); False: it precedes the optimizer step, on the same dense gradient.
      rounding: k = round | int | ceil of drop_fraction * active weights.

    Gradual pruning (GraNet, `schedule=gradual`): with `initial_density` set, the run starts at that density
    and the masks do not change at all before prune_start_fraction of training: the first update is the
    first one on the update grid at or after `prune_start_step` (GraNet core.py:344-346 gates pruning and
    drop-and-grow alike). From there each update first prunes the largest-|w| cut of the sparse layers down
    to exactly int(N * gradual_density(step)) active weights (N: their size; nothing at prune_start_step
    itself, where the density is still the initial one), reaching the final density (1 - sparsity) at the
    first update from prune_end_fraction on; the drop-and-grow of that update follows. After the window
    the drop-and-grow goes on at the final density, as GraNet's truncate_weights does. When this equals
    GraNet exactly: see `planned_active`. None: the run starts at the final density and updates from the
    first interval on.
    """

    total_steps: int
    update_interval: int = 1000
    drop_fraction: float = 0.5
    decay: Decay = "cosine"
    min_drop_fraction: float = 0.005
    stop_fraction: float = 1.0
    regrow_dropped: bool = True
    skip_optimizer_step_on_update: bool = False
    update_at_step0: bool = False
    update_after_optimizer_step: bool = True
    rounding: Rounding = "ceil"
    initial_density: float | None = None
    prune_start_fraction: float = 0.0
    prune_end_fraction: float = 1.0

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
        if self.initial_density is not None:
            check_number("schedule.initial_density", self.initial_density, 0.0, 1.0, low_open=True)
        check_number("schedule.prune_start_fraction", self.prune_start_fraction, 0.0, 1.0)
        check_number("schedule.prune_end_fraction", self.prune_end_fraction, 0.0, 1.0)
        if self.initial_density is not None and self.prune_end_step <= self.prune_start_step:
            raise SparseConfigError(
                "schedule.prune_end_fraction",
                f"schedule.prune_end_fraction={self.prune_end_fraction} ends the pruning window at step "
                f"{self.prune_end_step}, not after its start (step {self.prune_start_step}); allowed: a fraction "
                "of total_steps later than prune_start_fraction",
            )
        if self.update_after_optimizer_step and (self.skip_optimizer_step_on_update or self.update_at_step0):
            raise SparseConfigError(
                "schedule.update_after_optimizer_step",
                "schedule.update_after_optimizer_step=True cannot be combined with skip_optimizer_step_on_update "
                "or update_at_step0 (both need the update before the optimizer step); allowed: one or the other",
            )

    def __repr__(self) -> str:
        """The fields that differ from the defaults (the itop preset): eval() gives an equal schedule."""
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if f.name == "total_steps" or getattr(self, f.name) != f.default]
        return f"UpdateSchedule({', '.join(changed)})"

    @property
    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)

    @property
    def prune_start_step(self) -> int:
        return int(self.prune_start_fraction * self.total_steps)

    @property
    def prune_end_step(self) -> int:
        return int(self.prune_end_fraction * self.total_steps)

    def planned_active(self, step: int, prunable: int, final_density: float) -> int | None:
        """Gradual pruning: the active weights of the `prunable` weights of the sparse layers planned for an
        update at `step`, int(prunable * gradual_density(step)) (GraNet core.py:391); None when this schedule
        does not prune gradually or `step` is not after the window's start (core.py:344, :378).
        The product is floored with a tolerance of COUNT_TOLERANCE weights: 1 - 0.9 is 0.09999999999999998 in
        floating point, and a plain int() would end a run of 100 weights at 9 active ones instead of 10.

        Fidelity to VITA-Group/GraNet CIFAR/sparselearning/core.py (Masking.step :335-346, pruning :367-401),
        with the same update_interval (GraNet's update_frequency) and the gradual preset's other fields.
        GraNet updates at every multiple t of the interval with t >= init_prune_epoch's step (:344) and
        computes its cubic in whole update intervals, from ini_iter = floor(start / interval) to final_iter =
        floor(end / interval) (:369-372, plain int() of floats), pruning while ini_iter <= t / interval <=
        final_iter - 1 (:378). Our updates run at the same steps (is_update_step; not one after the last
        optimizer step, which would train nothing). Our planned counts equal GraNet's num_params_to_keep
        (:391) at every update before `prune_end_step` when both `prune_start_step` and `prune_end_step` are
        multiples of update_interval (else GraNet's cubic is anchored at the grid points below them, ours at
        the exact steps), up to the float rounding of int() (GraNet: int(N * (1 - curr_prune_rate)); here
        the tolerance above). Three differences remain:
          * at the update at `prune_end_step` (on the grid) we prune to exactly the final density; GraNet
            stops one update earlier, at final + (initial - final) / n**3 for n = (end - start) / interval
            updates in the window (e.g. 0.05 + 0.45 / 43**3 = 0.0500057 for its CIFAR defaults), and stays
            there;
          * GraNet keeps |w| > the num_params_to_keep-th largest |w| (:393-399), one weight fewer than its
            own count when no magnitudes tie; here exactly the planned count is kept (ties: earlier layer
            and position pruned first);
          * at an update at `prune_start_step` itself GraNet runs that cut too (decay 1: the initial
            density, core.py:379-381), which with the strict > removes a weight; here it prunes nothing.
        """
        if self.initial_density is None or step <= self.prune_start_step:
            return None
        density = gradual_density(step, initial_density=self.initial_density, final_density=final_density,
                                  start_step=self.prune_start_step, end_step=self.prune_end_step)
        return math.floor(prunable * density + COUNT_TOLERANCE)

    def is_update_step(self, step: int) -> bool:
        """An update at `step` optimizer steps taken: every interval, up to and including the stop step
        (RigL TF sparse_optimizers_base.py:216-226), never after the last optimizer step of the run.
        Gradual pruning: none before `prune_start_step` (GraNet core.py:344: `steps >= init_prune_epoch *
        len(loader)` gates both pruning() and truncate_weights())."""
        if step % self.update_interval or (step == 0 and not self.update_at_step0):
            return False
        if self.initial_density is not None and step < self.prune_start_step:
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
        """Every step at which an update runs, in order (the steps where is_update_step is True)."""
        first = 0 if self.update_at_step0 else self.update_interval
        if self.initial_density is not None:  # the first multiple of the interval at or after the window's start
            first = max(first, -(-self.prune_start_step // self.update_interval) * self.update_interval)
        last = min(self.stop_step, self.total_steps - 1)
        return range(first, last + 1, self.update_interval)


def gradual_density(
    step: int, *, initial_density: float, final_density: float, start_step: int, end_step: int
) -> float:
    """GraNet's global density at `step`: Zhu & Gupta's cubic from initial_density down to final_density.

    d(t) = final + (initial - final) * (1 - (t - start) / (end - start)) ** 3, initial before start, final
    from end on. VITA-Group/GraNet CIFAR/sparselearning/core.py:367-381 (prune_decay = (1 - (iter - ini) /
    total) ** 3 in units of update iterations; curr_prune_rate = (1 - init) + (init - final) * (1 - decay));
    equal to this at update steps when start and end are multiples of the update interval (GraNet floors
    both to the update grid, :370-371). GraNet prunes while iter <= final_iter - 1 (:378), so it stops a
    hair above the final density; here the first update from `end_step` on reaches it exactly (the full
    list of differences: UpdateSchedule.planned_active).
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


SCHEDULE_OPTIONS = tuple(f.name for f in fields(UpdateSchedule) if f.name != "total_steps")

# Each preset names the fields it sets differently from UpdateSchedule's defaults (the itop values).
SCHEDULE_PRESETS: dict[str, dict] = {
    # RigL's TF code (google-research/rigl): masks updated every 100 steps from step 0
    # (last_mask_update_step starts at -frequency: sparse_optimizers_base.py:164-171) to end_step
    # (imagenet_train_eval.py:242-244: every 100 steps, end 25000 = 75% of the paper's 32000 ImageNet steps);
    # drop 0.3 cosine-decayed to 0 (imagenet_train_eval.py:224, sparse_optimizers_base.py:236-242);
    # an update iteration runs the mask update *instead of* the optimizer step (SparseRigLOptimizerBase.
    # apply_gradients: cond(is_mask_update_iter, mask_update_op, apply_gradient_op), :487-521);
    # k = int(n_ones * drop_fraction) (:287-289); the grow candidates are all weights not kept after the drop,
    # so just-dropped weights can be regrown (:305-310) and keep their value and momentum (:331-337).
    "rigl": dict(update_interval=100, drop_fraction=0.3, min_drop_fraction=0.0, stop_fraction=0.75,
                 skip_optimizer_step_on_update=True, update_at_step0=True, update_after_optimizer_step=False,
                 rounding="int"),
    # ITOP / sparselearning (Shiweiliuiiiiiii/In-Time-Over-Parameterization, sparselearning/core.py):
    # Masking.step() = optimizer.step(); apply_mask(); decay.step(); steps += 1; then, every
    # update_frequency steps, truncate_weights() (:212-223), on the gradient of the current batch;
    # death rate 0.5 cosine-annealed to 0.005 over the whole run (CosineDecay(death_rate,
    # len(train_loader) * epochs), main.py:270, core.py:22-31); update every 1000 steps as in the DST-EE and
    # GraNet CIFAR recipes (the ITOP README's commands use 1500-4000: override update_interval);
    # num_remove = ceil(death_rate * nonzeros) (:391); growth picks among new_mask == 0, which includes the
    # weights just dropped (:344-366, :477-485), and those keep their value and momentum.
    # (UpdateSchedule's defaults are this preset's values)
    "itop": dict(),
    # GraNet (VITA-Group/GraNet, CIFAR/sparselearning/core.py): ITOP's Masking with gradual pruning in front.
    # Masking.step() = optimizer.step(); apply_mask() (which also zeroes the momentum of masked weights,
    # :528-535); then every update_frequency steps from init_prune_epoch on: pruning(step), the global
    # magnitude cut to the cubic density (:342-346, :367-413), then truncate_weights(step), the per-layer
    # prune-and-regrow (:537-563): ceil(prune_rate * nonzeros) smallest |w| dropped (:584-592), as many
    # grown by |gradient| among all zeros, just-dropped included (:617-626), prune_rate 0.5 cosine-annealed
    # to 0.005 over the whole run (CosineDecay :27-36, main.py:274). Defaults: --init-density 0.5,
    # --init-prune-epoch 0, --final-prune-epoch 110 of the README's 160 epochs (core.py:19-23, README
    # "GraNet (s_i = 0.5)"): the window is [0, 0.6875] of training; update every 1000 steps (README).
    # Growth by |gradient| is acq=rigl.
    # Everything else as itop.
    "gradual": dict(initial_density=0.5, prune_start_fraction=0.0, prune_end_fraction=110 / 160),
}


def check_schedule_options(options: dict) -> None:
    for key in options:
        if key not in SCHEDULE_OPTIONS:
            raise SparseConfigError(key, f"{key} is not a schedule option; allowed: {', '.join(SCHEDULE_OPTIONS)}")


def schedule_preset(name: str, total_steps: int, **overrides) -> UpdateSchedule:
    """The preset `name` (rigl | itop | gradual) for a run of `total_steps` steps, with any field overridden."""
    check_choice("schedule", name, tuple(SCHEDULE_PRESETS))
    check_schedule_options(overrides)
    return UpdateSchedule(total_steps=total_steps, **{**SCHEDULE_PRESETS[name], **overrides})


def resolve_schedule(schedule: "str | UpdateSchedule", total_steps: int, overrides: dict) -> UpdateSchedule:
    if isinstance(schedule, UpdateSchedule):
        check_schedule_options(overrides)
        return replace(schedule, total_steps=total_steps, **overrides)
    return schedule_preset(schedule, total_steps, **overrides)
