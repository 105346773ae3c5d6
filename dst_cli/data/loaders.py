"""The two Loader implementations: tensors on the device, or a torch DataLoader with worker processes."""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dst_cli.data.base import Data, LoaderSettings, check_enough_for_one_batch, count
from dst_cli.data.sampling import BatchPlan, DrawParams
from dst_cli.data.transforms import CropFlip, Normalize


def copy_without_waiting(tensor: Tensor, device: torch.device) -> Tensor:
    """A tensor of one batch (samples, labels, indices or augmentation parameters) on `device`. From the host
    to CUDA it goes through pinned memory asynchronously: a copy from pageable memory, non_blocking or not,
    would make the host wait for the GPU at every batch. A tensor already on a GPU (no pinning) moves as is."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def plan_for(num_samples: int, settings: LoaderSettings, train: bool) -> BatchPlan:
    """The batch plan of a training or evaluation loader of this run and rank."""
    batch_size = settings.batch_size if train else settings.eval_batch_size
    return BatchPlan(num_samples, batch_size, train, settings.seed, settings.rank, settings.world_size)


class TensorLoader:
    """Samples held as tensors on the training device; batches are gathered and augmented there."""

    def __init__(
        self, images: Tensor, labels: Tensor, plan: BatchPlan, normalize: Normalize, augment: CropFlip | None = None
    ) -> None:
        self.images = images
        self.labels = labels
        self.plan = plan
        self.normalize = normalize
        self.augment = augment

    def __len__(self) -> int:
        return len(self.plan)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        draw_params = self.augment.draw if self.augment is not None else None
        device = self.images.device
        for indices, params in self.plan.batches(epoch, start, draw_params):
            indices = copy_without_waiting(indices, device)
            images = self.images[indices]
            if params is not None:
                images = self.augment.apply_batch(images, copy_without_waiting(params, device))
            yield self.normalize(images), self.labels[indices]



def split_sizes(train_size, val_size, test_size) -> dict[str, int]:
    """The checked sample counts of the train, val (0: none) and test splits of a generated dataset."""
    return {"train": count("train_size", train_size, minimum=1), "val": count("val_size", val_size),
            "test": count("test_size", test_size, minimum=1)}


def tensor_data(
    dataset: str, splits: dict[str, tuple[Tensor, Tensor]], settings: LoaderSettings, normalize: Normalize,
    num_classes: int, input_shape: tuple[int, ...],
) -> Data:
    """Data over (inputs, labels) tensors per split, held on the training device; an empty val split is none."""
    check_enough_for_one_batch(dataset, len(splits["train"][1]), settings)

    def loader(split: str, train: bool) -> TensorLoader:
        inputs, labels = splits[split]
        plan = plan_for(len(labels), settings, train)
        return TensorLoader(inputs.to(settings.device), labels.to(settings.device), plan, normalize)

    return Data(
        train=loader("train", train=True),
        val=loader("val", train=False) if len(splits["val"][1]) else None,
        test=loader("test", train=False),
        num_classes=num_classes,
        input_shape=input_shape,
    )

# Turns one PIL image and its augmentation parameters (None for evaluation) into a normalised tensor.
SampleTransform = Callable[[Image.Image, Any], Tensor]


class PlannedDataset(Dataset):
    """Reads items (index, augmentation parameters) from a dataset of (PIL image, label) pairs."""

    def __init__(self, images: Dataset, transform: SampleTransform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, Any]) -> tuple[Tensor, int]:
        index, params = item
        image, label = self.images[index]
        return self.transform(image, params), label


class PlanBatchSampler:
    """Batch sampler that follows a BatchPlan from a settable (epoch, start batch).

    Resuming at batch `start` skips the earlier batches here, so their images are never loaded.
    """

    def __init__(self, plan: BatchPlan, draw_params: DrawParams | None) -> None:
        self.plan = plan
        self.draw_params = draw_params
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, Any]]]:
        # Bind epoch and start now: the DataLoader starts prefetching as soon as it calls iter().
        return self._items(self.epoch, self.start)

    def _items(self, epoch: int, start: int) -> Iterator[list[tuple[int, Any]]]:
        for indices, params in self.plan.batches(epoch, start, self.draw_params):
            params_per_sample: Sequence[Any] = params.tolist() if params is not None else [None] * len(indices)
            yield list(zip(indices.tolist(), params_per_sample))


class WorkerLoader:
    """A torch DataLoader (PIL decoding and transforms in worker processes) driven by a BatchPlan."""

    def __init__(
        self,
        dataset: PlannedDataset,
        plan: BatchPlan,
        draw_params: DrawParams | None,
        device: torch.device,
        num_workers: int,
    ) -> None:
        self.device = device
        self.sampler = PlanBatchSampler(plan, draw_params)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            # The DataLoader draws its workers' base seed from this, not from the global RNG.
            generator=torch.Generator(),
        )

    def __len__(self) -> int:
        return len(self.sampler.plan)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.epoch, self.sampler.start = epoch, start
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
