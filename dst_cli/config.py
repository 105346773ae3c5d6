"""Checks of the composed config that Hydra cannot express: ranges and allowed values."""
from omegaconf import DictConfig

from dst_cli.console import PROGRESS_MODES
from dst_cli.errors import UserError
from dst_cli.sparse.distribution import DISTRIBUTIONS
from dst_cli.sparse.schedule import DECAYS

DEVICES = ("auto", "cpu", "cuda")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value} is invalid; allowed: {allowed}")


def require_positive_int(key: str, value) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0, key, value, "an integer >= 1")


def require_fraction(key: str, value, low: float, high: float, high_open: bool = False) -> None:
    inside = is_number(value) and low <= value and (value < high if high_open else value <= high)
    require(inside, key, value, f"a number in [{low:g}, {high:g}{')' if high_open else ']'}")


def validate_config(cfg: DictConfig) -> None:
    require_fraction("sparsity", cfg.sparsity, 0.0, 1.0, high_open=True)
    require(cfg.distribution in DISTRIBUTIONS, "distribution", cfg.distribution, " | ".join(DISTRIBUTIONS))
    require(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool), "seed", cfg.seed, "an integer")
    require_positive_int("trainer.epochs", cfg.trainer.epochs)
    require_positive_int("trainer.batch_size", cfg.trainer.batch_size)
    require_positive_int("trainer.eval_batch_size", cfg.trainer.eval_batch_size)
    require(cfg.trainer.device in DEVICES, "trainer.device", cfg.trainer.device, " | ".join(DEVICES))
    require(cfg.trainer.progress in PROGRESS_MODES, "trainer.progress", cfg.trainer.progress, " | ".join(PROGRESS_MODES))
    schedule = cfg.schedule
    require_positive_int("schedule.update_interval", schedule.update_interval)
    require_fraction("schedule.drop_fraction", schedule.drop_fraction, 0.0, 1.0)
    require_fraction("schedule.min_drop_fraction", schedule.min_drop_fraction, 0.0, schedule.drop_fraction)
    require_fraction("schedule.stop_fraction", schedule.stop_fraction, 0.0, 1.0)
    require(schedule.decay in DECAYS, "schedule.decay", schedule.decay, " | ".join(DECAYS))
    require(is_number(cfg.optim.lr) and cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "a number > 0")
