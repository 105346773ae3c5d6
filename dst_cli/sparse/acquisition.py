"""What to drop and what to grow: the acquisition protocol, its registry and the built-in functions.

An acquisition scores weights; the engine drops the k active weights with the lowest drop score, then grows
the k candidates with the highest grow score (candidates: every weight inactive after the drop, see
UpdateSchedule.regrow_dropped). As in jaxpruner (algorithms/sparse_trainers.py: one small class per algorithm),
RigL is SET with another grow score and EE is RigL plus an exploration bonus. Every score receives one
ScoreContext, so a method that needs the gradient to drop (MEST) or the momentum to grow (SNFS) fits
without a signature change; `regrowth_counts` lets a method move growth between layers (SNFS).
"""
import inspect
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dst_cli.sparse.errors import SparseConfigError, check_choice, check_number, invalid


@dataclass
class ScoreContext:
    """Everything a score may use for one prunable weight at one mask update."""

    name: str
    weight: Tensor
    grad: Tensor                          # dense gradient of this batch (zeros if the weight has none)
    mask: Tensor                          # bool mask of the layer before this update (do not modify)
    optimizer_state: dict[str, Tensor]    # the weight's per-weight optimizer state, e.g. "momentum_buffer"
    active_steps: Tensor | None           # N: optimizer steps each weight has been active (needs_active_steps)
    step: int                             # optimizer steps taken so far
    generator: torch.Generator            # the engine's generator (same seed on every rank)

    def uniform(self) -> Tensor:
        """Uniform random numbers of the weight's shape from the engine's generator."""
        return torch.rand(self.weight.shape, generator=self.generator, device=self.weight.device)


class Acquisition:
    """Subclass and override the scores; register the class with @register_acquisition("name").

    Options are keyword arguments of __init__; check them there and raise SparseConfigError(key="acq.<opt>").
    """

    name: str = ""
    updates_topology = True      # False: the initial mask is kept (no updates at all)
    uses_gradient = True         # updates need the dense gradient (counted in the training FLOPs)
    needs_active_steps = False   # the engine keeps N counters (int32 per weight) only when True

    def drop_scores(self, ctx: ScoreContext) -> Tensor:
        """The engine drops the k active weights with the lowest score. Default |w|."""
        return ctx.weight.abs()

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        """The engine grows the k candidates with the highest score."""
        raise NotImplementedError(f"{type(self).__name__} must define grow_scores")

    def regrowth_counts(self, dropped: dict[str, int], contexts: dict[str, ScoreContext]) -> dict[str, int]:
        """How many weights each layer grows, given how many it dropped. Default: the same per layer.
        An override may move counts between layers; the engine checks the total stays exact."""
        return dict(dropped)


_REGISTRY: dict[str, type[Acquisition]] = {}


def register_acquisition(name: str):
    """Class decorator: make an Acquisition subclass available as acq=`name`."""

    def register(cls: type[Acquisition]) -> type[Acquisition]:
        if not (isinstance(cls, type) and issubclass(cls, Acquisition)):
            raise TypeError(f"@register_acquisition({name!r}) needs an Acquisition subclass, got {cls!r}")
        taken = _REGISTRY.get(name)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"acquisition name {name!r} is already taken by {taken.__module__}.{taken.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def acquisition_names() -> list[str]:
    return list(_REGISTRY)


def make_acquisition(acq: "str | type[Acquisition] | Acquisition", **options) -> Acquisition:
    """An acquisition from a registered name or a class (with its options), or an instance as it is."""
    if isinstance(acq, Acquisition):
        if options:
            raise SparseConfigError("acq_options", "acq_options cannot be given with an Acquisition instance; "
                                    "allowed: options with a registered name or a class")
        return acq
    if isinstance(acq, str):
        if acq not in _REGISTRY:
            raise invalid("acq", acq, " | ".join(_REGISTRY))
        acq = _REGISTRY[acq]
    if not (isinstance(acq, type) and issubclass(acq, Acquisition)):
        raise invalid("acq", acq, f"a registered name ({' | '.join(_REGISTRY)}), an Acquisition subclass or instance")
    accepted = [p.name for p in inspect.signature(acq.__init__).parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    label = acq.name or acq.__qualname__
    for key in options:
        if key not in accepted:
            raise SparseConfigError(f"acq.{key}", f"acq.{key} is not an option of acq={label}; "
                                    f"allowed: {', '.join(accepted) or 'no options'}")
    return acq(**options)


@register_acquisition("set")
class SET(Acquisition):
    """Mocanu et al. 2018: drop the smallest |w|, grow uniformly at random
    (RigL TF sparse_optimizers_base.py:260-274; jaxpruner algorithms/sparse_trainers.py SET._get_grow_scores)."""

    uses_gradient = False

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.uniform()


@register_acquisition("random")
class Random(SET):
    """Pure-noise control: drop and grow uniformly at random."""

    def drop_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.uniform()


@register_acquisition("static")
class Static(SET):
    """No updates: the initial random mask is kept."""

    updates_topology = False


@register_acquisition("rigl")
class RigL(SET):
    """Evci et al. 2020: grow the largest dense-gradient magnitudes
    (RigL TF sparse_optimizers_base.py:523-538: score_grow = |grad of the masked weights|;
    jaxpruner algorithms/sparse_trainers.py RigL._get_grow_scores)."""

    uses_gradient = True

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.grad.abs()


BONUSES = ("log", "sqrt")


@register_acquisition("ee")
class EE(RigL):
    """DST-EE (Huang et al., DAC 2023): grow by |g| + c * bonus(t, N).

    bonus `log`:  ln(t) / (N + eps)         bonus `sqrt`: sqrt(ln(t) / (N + eps))   (UCB1)
    t = optimizer steps taken (ln taken of max(t, 1): no bonus at a step-0 update), N = steps the weight has
    been active so far. The paper's code is not public; this follows its text.
    """

    needs_active_steps = True

    def __init__(self, c: float = 3e-4, eps: float = 1.0, bonus: str = "log"):
        self.c = check_number("acq.c", c, 0.0)
        self.eps = check_number("acq.eps", eps, 0.0, low_open=True)
        self.bonus = check_choice("acq.bonus", bonus, BONUSES)

    def exploration_bonus(self, active_steps: Tensor, step: int) -> Tensor:
        ratio = math.log(max(step, 1)) / (active_steps.float() + self.eps)
        return ratio if self.bonus == "log" else ratio.sqrt()

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        return ctx.grad.abs() + self.c * self.exploration_bonus(ctx.active_steps, ctx.step)
