"""Datasets as deterministic loaders: build_data(cfg.dataset, ...) -> Data(train, val, test, ...).

A Loader yields (x, y) on the device; `batches(epoch, start)` is a pure function of
(seed, epoch, batch index), so resuming at batch b and sharding over ranks are exact.
"""

from collections.abc import Callable, Mapping
from typing import Any

import torch

from dst_cli.data.base import Data, Loader, LoaderSettings, plain_options
from dst_cli.data.cifar import build_cifar
from dst_cli.data.digits import build_digits
from dst_cli.data.imagenet import build_imagenet
from dst_cli.data.synthetic import build_synthetic
from dst_cli.errors import UserError

__all__ = ["Data", "Loader", "build_data", "DATASETS"]

DATASETS: dict[str, Callable[[Mapping[str, Any], LoaderSettings], Data]] = {
    "digits": build_digits,
    "synthetic": build_synthetic,
    "cifar10": build_cifar,
    "cifar100": build_cifar,
    "imagenet": build_imagenet,
}


def build_data(
    cfg: Mapping,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int | None = None,
) -> Data:
    """The loaders of dataset `cfg.name` for one rank; `batch_size` is per rank, `eval_batch_size`
    (default `batch_size`) is for the val / test loaders."""
    options = plain_options(cfg)
    name = options.get("name")
    if name not in DATASETS:
        raise UserError(f"dataset name {name!r} is unknown; allowed: {', '.join(DATASETS)}")
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    if batch_size < 1 or eval_batch_size < 1:
        raise UserError(f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside 0..{world_size - 1} for world_size {world_size}")
    settings = LoaderSettings(batch_size, eval_batch_size, seed, torch.device(device), rank, world_size)
    return DATASETS[name](options, settings)
