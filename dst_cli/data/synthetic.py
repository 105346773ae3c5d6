"""A learnable synthetic image set: one random prototype image per class plus Gaussian noise."""

import torch
from torch import Tensor

from dst_cli.data.base import Data, LoaderSettings, count
from dst_cli.data.loaders import split_sizes, tensor_data
from dst_cli.data.sampling import seeded_generator
from dst_cli.data.transforms import channel_normalize
from dst_cli.errors import UserError


def input_shape_option(shape: list[int]) -> tuple[int, int, int]:
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


def build_synthetic(
    settings: LoaderSettings,
    shape: list[int] = (3, 32, 32),
    num_classes: int = 10,
    train_size: int = 1024,
    val_size: int = 0,
    test_size: int = 256,
    noise_std: float = 1.0,
    data_seed: int = 0,
) -> Data:
    """Generated on the fly: one random prototype image per class plus Gaussian noise (learnable, no files).

    shape: [C, H, W] of one image
    num_classes: classes
    train_size: training images
    val_size: validation images (0: no validation loader)
    test_size: test images
    noise_std: noise around each class prototype (prototype pixels have std 1)
    data_seed: fixes the data independently of the run seed
    """
    shape = input_shape_option(shape)
    num_classes = count("num_classes", num_classes, minimum=2)
    sizes = split_sizes(train_size, val_size, test_size)
    noise_std = float(noise_std)
    prototypes = torch.randn((num_classes, *shape), generator=seeded_generator("synthetic", data_seed, "prototypes"))
    splits = {name: make_split(prototypes, size, noise_std, data_seed, name) for name, size in sizes.items()}
    normalize = channel_normalize(splits["train"][0])
    return tensor_data("synthetic", splits, settings, normalize, num_classes, shape)
