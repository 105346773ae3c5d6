"""What to drop and what to grow: the acquisition functions.

Each one scores weights; the engine drops the active weights with the lowest drop score and grows the
inactive weights with the highest grow score. As in jaxpruner, RigL is SET with a different grow score
and EE is RigL plus an exploration bonus.
"""
import math

import torch
from torch import Tensor

from dst_cli.errors import UserError

BONUSES = ("log", "sqrt")


class SET:
    """Mocanu et al. 2018: drop the smallest |w|, grow uniformly at random."""

    updates_topology = True
    uses_gradient = False

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def random_scores(self, like: Tensor) -> Tensor:
        return torch.rand(like.shape, generator=self.generator, device=like.device)

    def drop_scores(self, weight: Tensor) -> Tensor:
        return weight.abs()

    def grow_scores(self, weight: Tensor, grad: Tensor, active_steps: Tensor, step: int) -> Tensor:
        return self.random_scores(weight)


class Random(SET):
    """Pure-noise control: drop and grow uniformly at random."""

    def drop_scores(self, weight: Tensor) -> Tensor:
        return self.random_scores(weight)


class Static(SET):
    """No updates: the initial random mask is kept."""

    updates_topology = False


class RigL(SET):
    """Evci et al. 2020: grow the largest dense-gradient magnitudes."""

    uses_gradient = True

    def grow_scores(self, weight: Tensor, grad: Tensor, active_steps: Tensor, step: int) -> Tensor:
        return grad.abs()


class EE(RigL):
    """DST-EE (Huang et al., DAC 2023): |g| + c * bonus(t, N).

    bonus `log`:  ln(t) / (N + eps)         bonus `sqrt`: sqrt(ln(t) / (N + eps))   (UCB1)
    t = training step, N = steps the weight has been active so far.
    """

    def __init__(self, generator: torch.Generator, c: float, eps: float, bonus: str):
        super().__init__(generator)
        if c < 0:
            raise UserError(f"acq.c={c} is negative; allowed: c >= 0")
        if eps <= 0:
            raise UserError(f"acq.eps={eps} is not positive; allowed: eps > 0")
        if bonus not in BONUSES:
            raise UserError(f"acq.bonus={bonus} is not known; allowed: {', '.join(BONUSES)}")
        self.c, self.eps, self.bonus = c, eps, bonus

    def exploration_bonus(self, active_steps: Tensor, step: int) -> Tensor:
        ratio = math.log(step) / (active_steps.float() + self.eps)
        return ratio if self.bonus == "log" else ratio.sqrt()

    def grow_scores(self, weight: Tensor, grad: Tensor, active_steps: Tensor, step: int) -> Tensor:
        return grad.abs() + self.c * self.exploration_bonus(active_steps, step)


ACQUISITIONS = {"ee": EE, "rigl": RigL, "set": SET, "random": Random, "static": Static}


def build_acquisition(name: str, generator: torch.Generator, **options) -> SET:
    if name not in ACQUISITIONS:
        raise UserError(f"acq={name} is not known; allowed: {', '.join(ACQUISITIONS)}")
    return ACQUISITIONS[name](generator, **options)
