"""Optimizer and learning-rate schedule (a pure function of the step, set on the param groups)."""
from collections.abc import Mapping

import torch
from torch import nn

from dst_cli.config import OPTIMIZERS
from dst_cli.errors import UserError


def build_optimizer(cfg: Mapping, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of the optim node `cfg`; torch refusing an argument becomes a one-line UserError."""
    try:
        return make_optimizer(cfg, model)
    except ValueError as error:
        raise UserError(f"optim: {' '.join(str(error).split())}") from None


def make_optimizer(cfg: Mapping, model: nn.Module) -> torch.optim.Optimizer:
    if cfg["name"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
            nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"],
        )
    if cfg["name"] == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"]
        )
    raise UserError(f"optim={cfg['name']} is not known; allowed: {', '.join(OPTIMIZERS)}")


def learning_rate(cfg: Mapping, step: int, steps_per_epoch: int, epochs: int) -> float:
    """lr for optimizer step `step` (1-based): linear warm-up, then x gamma at each milestone epoch."""
    warmup_steps = round(cfg["warmup_epochs"] * steps_per_epoch)
    if step <= warmup_steps:
        return cfg["lr"] * step / warmup_steps
    epoch = (step - 1) // steps_per_epoch
    decays = sum(epoch >= round(fraction * epochs) for fraction in cfg["milestones"])
    return cfg["lr"] * cfg["gamma"] ** decays


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
