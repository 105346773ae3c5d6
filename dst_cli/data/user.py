"""Your own data: the train / test (and val) torch Datasets a `dataset._target_` callable returns, served by
the same deterministic batch plan as the built-in loaders (seed, epoch, start batch, rank shards)."""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from dst_cli.data.base import Data, LoaderSettings, check_enough_for_one_batch
from dst_cli.data.loaders import copy_without_waiting, plan_for
from dst_cli.data.sampling import BatchPlan
from dst_cli.errors import UserError

RETURNS = ("the callable given as dataset._target_ must return (train, test), (train, val, test) or a dict with "
           "keys train, test and optionally val, num_classes, input_shape; each a map-style torch Dataset of "
           "(tensor, label)")


class DatasetLoader:
    """Batches of a map-style Dataset in the order of a BatchPlan, stacked and moved to the device."""

    def __init__(self, dataset: Dataset, plan: BatchPlan, device: torch.device) -> None:
        self.dataset = dataset
        self.plan = plan
        self.device = device

    def __len__(self) -> int:
        return len(self.plan)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        for indices, _ in self.plan.batches(epoch, start):
            items = [self.dataset[index] for index in indices.tolist()]
            inputs = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x, _ in items])
            labels = torch.as_tensor([int(y) for _, y in items], dtype=torch.long)
            yield copy_without_waiting(inputs, self.device), copy_without_waiting(labels, self.device)


def labels_of(dataset: Dataset) -> Tensor:
    """Every label of `dataset` (read from `targets` or a TensorDataset's tensors when it has them)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].long()
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets).long()
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def as_splits(made: Any) -> dict[str, Any]:
    if isinstance(made, Mapping):
        return dict(made)
    if isinstance(made, Sequence) and len(made) == 2:
        return {"train": made[0], "test": made[1]}
    if isinstance(made, Sequence) and len(made) == 3:
        return {"train": made[0], "val": made[1], "test": made[2]}
    raise UserError(f"{RETURNS}; got {type(made).__name__}")


def wrap_datasets(made: Any, settings: LoaderSettings) -> Data:
    """Data over the datasets returned by a user's callable; num_classes and input_shape are inferred from
    the training set (largest label + 1; the shape of one input) unless the callable gives them."""
    splits = as_splits(made)
    for split in ("train", "test", "val"):
        dataset = splits.get(split)
        if (dataset is None and split != "val") or not (dataset is None or hasattr(dataset, "__getitem__")):
            raise UserError(f"{RETURNS}; its {split} set is {type(dataset).__name__}")
    train, val, test = splits["train"], splits.get("val"), splits["test"]
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"dataset: the training and test sets must not be empty ({len(train)} and {len(test)} samples)")
    check_enough_for_one_batch("dataset", len(train), settings)
    num_classes = splits.get("num_classes") or int(labels_of(train).max()) + 1
    input_shape = tuple(splits.get("input_shape") or torch.as_tensor(train[0][0]).shape)

    def loader(dataset: Dataset, train_split: bool) -> DatasetLoader:
        return DatasetLoader(dataset, plan_for(len(dataset), settings, train_split), settings.device)

    return Data(
        train=loader(train, True),
        val=loader(val, False) if val is not None and len(val) else None,
        test=loader(test, False),
        num_classes=num_classes,
        input_shape=input_shape,
    )
