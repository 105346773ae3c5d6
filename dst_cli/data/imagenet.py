"""ImageNet (or any dataset in the same layout): root/train/<class>/<image> and root/val/<class>/<image>.

torchvision is imported by the functions that use it, so that reading this module stays cheap."""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from dst_cli.data.base import Data, LoaderSettings, check_enough_for_one_batch, count, data_error, data_root
from dst_cli.data.loaders import PlannedDataset, WorkerLoader, plan_for
from dst_cli.data.transforms import Normalize, ResizedCropFlip
from dst_cli.errors import UserError

IMAGENET_NORMALIZE = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), scale=255.0)
HOW_TO_PROVIDE = (
    "set dataset.root=... to a folder holding train/<class>/<images> and val/<class>/<images> "
    "(the val images sorted into class folders)"
)


def draw_sample_seeds(count: int, generator: torch.Generator) -> Tensor:
    """One seed per sample: crop boxes depend on each image's size, so they are drawn in the worker."""
    return torch.randint(0, 2**62, (count,), generator=generator)


@dataclass(frozen=True)
class FolderTransform:
    """Training (a sample seed given): random resized crop + flip. Evaluation (None): resize + center crop."""

    train_crop: ResizedCropFlip
    resize_size: int
    normalize: Normalize

    def __call__(self, image: Image.Image, sample_seed: int | None) -> Tensor:
        import torchvision.transforms.functional as TF

        if sample_seed is None:
            image = TF.center_crop(TF.resize(image, self.resize_size, antialias=True), self.train_crop.size)
        else:
            image = self.train_crop(image, torch.Generator().manual_seed(sample_seed))
        return self.normalize(TF.pil_to_tensor(image))


def image_folder(root: Path, split: str):
    """torchvision's ImageFolder of root/split."""
    from torchvision.datasets import ImageFolder

    path = root / split
    try:
        return ImageFolder(str(path))
    except OSError as error:  # ImageFolder raises FileNotFoundError for a missing, empty or image-less tree
        raise data_error("imagenet", path, "no class folders with images found", HOW_TO_PROVIDE) from error


def build_imagenet(
    settings: LoaderSettings, root: str | None = None, num_workers: int = 8, crop_size: int = 224,
    resize_size: int = 256,
) -> Data:
    """ImageNet-1k or any folder in its layout (root/train/<class>/<images>, root/val/...); val/ is the test set.

    root: the folder holding train/ and val/ (no download)
    num_workers: DataLoader worker processes
    crop_size: RandomResizedCrop size for training, CenterCrop size for evaluation
    resize_size: evaluation: the short side is resized to this, then center-cropped
    """
    root = data_root(root)
    num_workers = count("num_workers", num_workers)
    transform = FolderTransform(
        ResizedCropFlip(count("crop_size", crop_size, 1)), count("resize_size", resize_size, 1), IMAGENET_NORMALIZE
    )
    train_folder, val_folder = image_folder(root, "train"), image_folder(root, "val")
    if train_folder.classes != val_folder.classes:
        raise UserError(
            f"dataset imagenet: {root}/train has {len(train_folder.classes)} class folders and {root}/val has "
            f"{len(val_folder.classes)}, not the same names; both need one folder per class"
        )
    check_enough_for_one_batch("imagenet", len(train_folder), settings)

    def loader(folder, train: bool) -> WorkerLoader:
        plan = plan_for(len(folder), settings, train)
        draw_params = draw_sample_seeds if train else None
        return WorkerLoader(PlannedDataset(folder, transform), plan, draw_params, settings.device, num_workers)

    crop_size = transform.train_crop.size
    return Data(
        train=loader(train_folder, train=True),
        val=None,
        test=loader(val_folder, train=False),
        num_classes=len(train_folder.classes),
        input_shape=(3, crop_size, crop_size),
    )
