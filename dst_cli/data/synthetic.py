"""A learnable synthetic image set: one random prototype image per class plus Gaussian noise."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from dst_cli.data.base import Data, LoaderSettings, check_enough_for_one_batch, count, option
from dst_cli.data.loaders import TensorLoader, plan_for
from dst_cli.data.sampling import seeded_generator
from dst_cli.data.transforms import channel_normalize
from dst_cli.errors import UserError


def input_shape_option(options: Mapping[str, Any]) -> tuple[int, int, int]:
    shape = option(options, "shape")
    if len(shape) != 3 or not all(isinstance(size, int) and size > 0 for size in shape):
        raise UserError(f"dataset.shape={list(shape)} must be three positive whole numbers [C, H, W]")
    return tuple(shape)


def make_split(prototypes: Tensor, size: int, noise_std: float, data_seed: int, split: str) -> tuple[Tensor, Tensor]:
    """`size` samples with balanced labels; each split has its own generator, so changing one size
    leaves the other splits unchanged."""
    generator = seeded_generator("synthetic", data_seed, split)
    labels = torch.arange(size) % len(prototypes)
    noise = torch.randn((size, *prototypes.shape[1:]), generator=generator)
    return prototypes[labels] + noise_std * noise, labels


def build_synthetic(options: Mapping[str, Any], settings: LoaderSettings) -> Data:
    shape = input_shape_option(options)
    num_classes = count(options, "num_classes", minimum=2)
    sizes = {
        "train": count(options, "train_size", minimum=1),
        "val": count(options, "val_size"),
        "test": count(options, "test_size", minimum=1),
    }
    noise_std, data_seed = float(option(options, "noise_std")), option(options, "data_seed")
    check_enough_for_one_batch("synthetic", sizes["train"], settings)

    prototypes = torch.randn((num_classes, *shape), generator=seeded_generator("synthetic", data_seed, "prototypes"))
    splits = {name: make_split(prototypes, size, noise_std, data_seed, name) for name, size in sizes.items()}
    normalize = channel_normalize(splits["train"][0])

    def loader(split: str, train: bool) -> TensorLoader:
        images, labels = splits[split]
        plan = plan_for(len(labels), settings, train)
        return TensorLoader(images.to(settings.device), labels.to(settings.device), plan, normalize)

    return Data(
        train=loader("train", train=True),
        val=loader("val", train=False) if sizes["val"] else None,
        test=loader("test", train=False),
        num_classes=num_classes,
        input_shape=shape,
    )
