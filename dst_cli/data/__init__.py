"""Datasets as deterministic loaders: build_data(cfg.dataset, ...) -> Data(train, val, test, ...).

`cfg.dataset._target_` names the callable; the node's other keys are its keyword arguments. A callable
with a `settings` parameter (the built-ins: digits, synthetic, CIFAR, ImageNet) builds its own fast
loaders and returns Data; any other callable returns torch Datasets, which dst_cli.data.user wraps.
A Loader yields (x, y) on the device; `batches(epoch, start)` is a pure function of (seed, epoch, batch
index), so resuming at batch b and sharding over ranks are exact.
"""

from collections.abc import Mapping

import torch

from dst_cli.config import call_plugin
from dst_cli.data.base import Data, Loader, LoaderSettings
from dst_cli.errors import UserError

__all__ = ["Data", "Loader", "LoaderSettings", "build_data"]


def build_data(
    cfg: Mapping,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int | None = None,
) -> Data:
    """The loaders of the dataset node `cfg` for one rank; `batch_size` is per rank, `eval_batch_size`
    (default `batch_size`) is for the val / test loaders."""
    from dst_cli.data.user import wrap_datasets

    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    if batch_size < 1 or eval_batch_size < 1:
        raise UserError(f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside 0..{world_size - 1} for world_size {world_size}")
    settings = LoaderSettings(batch_size, eval_batch_size, seed, torch.device(device), rank, world_size)
    made = call_plugin("dataset", cfg, settings=settings)
    return made if isinstance(made, Data) else wrap_datasets(made, settings)
