"""Normalisation and random augmentations, with every random number drawn from a given generator.

Augmentations are split into `draw` (random parameters, on the CPU, from an explicit generator)
and `apply` (deterministic), so the same parameters give the same image on any device and in
either pipeline (whole-batch tensor ops or per-image PIL in DataLoader workers).

torchvision is imported only by the per-image PIL functions: digits, synthetic and user-data runs never load it.
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class Normalize:
    """x -> (x / scale - mean) / std per channel; `scale` maps stored values (e.g. uint8) to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0

    def __call__(self, images: Tensor) -> Tensor:
        mean, std = channel_values(self.mean, images.device), channel_values(self.std, images.device)
        return (images.float() / self.scale - mean) / std


@functools.cache
def channel_values(values: tuple[float, ...], device: torch.device) -> Tensor:
    """Per-channel constants shaped to broadcast over (..., C, H, W), made once per device: building them at
    every batch would copy them to the GPU and make the host wait each time."""
    return torch.tensor(values, device=device).view(-1, 1, 1)


def channel_normalize(images: Tensor, scale: float = 1.0) -> Normalize:
    """Normalize with the per-channel mean and std of `images` (N, C, H, W), e.g. the training split."""
    values = images.double().div(scale).transpose(0, 1).flatten(1)
    return Normalize(tuple(values.mean(1).tolist()), tuple(values.std(1).tolist()), scale)


@dataclass(frozen=True)
class CropFlip:
    """Random crop back to the original size from a zero-padded image, then a random horizontal flip."""

    padding: int

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """Parameters (top, left, flip) of `count` samples, shape (count, 3), int64."""
        offsets = torch.randint(0, 2 * self.padding + 1, (count, 2), generator=generator)
        flips = torch.randint(0, 2, (count, 1), generator=generator)
        return torch.cat([offsets, flips], dim=1)

    def apply_batch(self, images: Tensor, params: Tensor) -> Tensor:
        """Augment a whole batch (N, C, H, W) with two gathers (rows, then columns); no per-sample Python."""
        n, c, h, w = images.shape
        p = self.padding
        padded = F.pad(images, (p, p, p, p))
        top, left, flip = params.to(images.device).unbind(1)
        rows = top[:, None] + torch.arange(h, device=images.device)
        columns = torch.arange(w, device=images.device).expand(n, w)
        columns = torch.where(flip[:, None].bool(), columns.flip(1), columns) + left[:, None]
        cropped_rows = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
        return cropped_rows.gather(3, columns[:, None, None, :].expand(n, c, h, w))

    def apply_image(self, image: Image.Image, params: list[int]) -> Image.Image:
        """The same augmentation on one PIL image, with one row of `draw`'s parameters."""
        import torchvision.transforms.functional as TF

        top, left, flip = params
        width, height = image.size
        image = TF.crop(TF.pad(image, [self.padding], fill=0), top, left, height, width)
        return TF.hflip(image) if flip else image


@dataclass(frozen=True)
class ResizedCropFlip:
    """Inception-style random resized crop (torchvision's RandomResizedCrop rules) + horizontal flip."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        import torchvision.transforms.functional as TF

        top, left, height, width = self.crop_box(*image.size, generator)
        image = TF.resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
        flip = torch.randint(0, 2, (), generator=generator).item()
        return TF.hflip(image) if flip else image

    def crop_box(self, image_width: int, image_height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """(top, left, height, width): up to 10 random tries at area and aspect ratio, else a central crop."""
        area = image_width * image_height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(*log_ratio, generator))
            width = round(math.sqrt(target_area * aspect))
            height = round(math.sqrt(target_area / aspect))
            if 0 < width <= image_width and 0 < height <= image_height:
                top = torch.randint(0, image_height - height + 1, (), generator=generator).item()
                left = torch.randint(0, image_width - width + 1, (), generator=generator).item()
                return top, left, height, width
        return self._central_box(image_width, image_height)

    def _central_box(self, image_width: int, image_height: int) -> tuple[int, int, int, int]:
        aspect = image_width / image_height
        width, height = image_width, image_height
        if aspect < self.ratio[0]:
            height = round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            width = round(height * self.ratio[1])
        return (image_height - height) // 2, (image_width - width) // 2, height, width


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()
