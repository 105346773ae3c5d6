"""What every dataset builder returns, the settings they share, and their user-facing errors."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from dst_cli.errors import UserError


class Loader(Protocol):
    def __len__(self) -> int:
        """Batches per epoch for this rank."""

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(x float32, y int64) on the device for batches start, start+1, ... of `epoch`."""


@dataclass
class Data:
    """What a built-in dataset builder returns (user datasets are wrapped into one by dst_cli.data.user)."""

    train: Loader
    val: Loader | None
    test: Loader
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True)
class LoaderSettings:
    """The run-level arguments of build_data, passed on to every loader."""

    batch_size: int
    eval_batch_size: int
    seed: int
    device: torch.device
    rank: int = 0
    world_size: int = 1


def choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"dataset.{key}={value!r} is not supported; allowed: {', '.join(allowed)}")
    return value


def count(key: str, value: Any, minimum: int = 0) -> int:
    """A whole-number option >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"dataset.{key}={value!r} must be a whole number >= {minimum}")
    return value


def data_root(root: str | None) -> Path:
    """The data folder, absolute, so error messages say exactly where we looked."""
    if root is None:
        raise UserError("dataset.root is not set; give the data folder as dataset.root=...")
    return Path(str(root)).expanduser().resolve()


def data_error(dataset: str, where: Path, problem: str, remedy: str) -> UserError:
    return UserError(f"dataset {dataset}: {problem} at {where}; {remedy}")


def check_enough_for_one_batch(dataset: str, train_size: int, settings: LoaderSettings) -> None:
    """Training drops the incomplete last batch, so a too-small training set would give empty epochs."""
    needed = settings.batch_size * settings.world_size
    if train_size < needed:
        raise UserError(
            f"dataset {dataset}: batch_size {settings.batch_size} x {settings.world_size} rank(s) = {needed} "
            f"exceeds the {train_size} training samples; use a smaller trainer.batch_size"
        )
