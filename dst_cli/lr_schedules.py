"""Learning-rate schedules (`lr_schedule=step | cosine | constant`): the factor of optim.lr at each step.

A schedule is a pure function of the optimizer step (1-based), so a resumed run continues exactly; the trainer
sets lr = optim.lr x factor(step) before every step. Every schedule may start with a linear warm-up over
`warmup_epochs` (per step: factor step / warm-up steps), as in Goyal et al. 2017 and RigL's ImageNet recipe.

- step: x gamma at each milestone (fractions of the epochs, applied from that epoch on): the CIFAR recipe of
  ITOP, GraNet and DST-EE (x0.1 at 50% and 75% of 160 epochs; VITA-Group/GraNet CIFAR/main.py
  `MultiStepLR(milestones=[epochs / 2, epochs * 3 / 4])`) and RigL's ImageNet one (x0.1 at epochs 30, 70,
  90 after 5 warm-up epochs; google-research/rigl imagenet_train_eval.py).
- cosine: half a cosine from optim.lr down to floor x optim.lr over the steps after the warm-up (SGDR,
  Loshchilov & Hutter 2017, without restarts), used by SRigL (calgaryml/condensed-sparsity
  configs/training/resnet18.yaml: `cosine_annealing_with_warm_up`) and most recent sparse-training recipes.
- constant: optim.lr throughout (after any warm-up).
"""
import math
from dataclasses import dataclass

from dst_cli.errors import UserError


def invalid(key: str, value, allowed: str) -> UserError:
    return UserError(f"lr_schedule.{key}={value} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class LRSchedule:
    """epochs and steps_per_epoch are the run's (the runner gives them).

    warmup_epochs: linear lr warm-up from 0 over this many epochs (per step; may be fractional)
    """

    epochs: int
    steps_per_epoch: int
    warmup_epochs: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.warmup_epochs, (int, float)) and 0 <= self.warmup_epochs <= self.epochs):
            raise invalid("warmup_epochs", self.warmup_epochs, f"a number in [0, trainer.epochs={self.epochs}]")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    def factor(self, step: int) -> float:
        """The share of optim.lr at optimizer step `step` (1-based)."""
        if step <= self.warmup_steps:
            return step / self.warmup_steps
        return self.decayed(step)

    def decayed(self, step: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Step(LRSchedule):
    """lr x gamma at each of the milestones, given as fractions of trainer.epochs.

    milestones: fractions of trainer.epochs where the lr is multiplied by gamma
    gamma: the factor at each milestone
    """

    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not all(isinstance(m, (int, float)) and 0 <= m <= 1 for m in self.milestones):
            raise invalid("milestones", list(self.milestones), "a list of fractions of the epochs, each in [0, 1]")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma > 0):
            raise invalid("gamma", self.gamma, "a finite number > 0")

    def decayed(self, step: int) -> float:
        epoch = (step - 1) // self.steps_per_epoch
        return self.gamma ** sum(epoch >= round(fraction * self.epochs) for fraction in self.milestones)


@dataclass(frozen=True)
class Cosine(LRSchedule):
    """Half a cosine per step from optim.lr to floor x optim.lr over the steps after the warm-up.

    floor: the lr at the end, as a share of optim.lr
    """

    floor: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.floor, (int, float)) and 0 <= self.floor <= 1):
            raise invalid("floor", self.floor, "a number in [0, 1] (a share of optim.lr)")

    def decayed(self, step: int) -> float:
        progress = (step - self.warmup_steps - 1) / max(1, self.total_steps - self.warmup_steps)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass(frozen=True)
class Constant(LRSchedule):
    """optim.lr at every step after the warm-up."""

    def decayed(self, step: int) -> float:
        return 1.0


LR_SCHEDULES = {"step": Step, "cosine": Cosine, "constant": Constant}
