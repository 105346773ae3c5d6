"""CIFAR-10 / CIFAR-100 from the "python version" pickle files.

torchvision is used only to download and unpack the archive (imported then, and by the PIL pipeline: a run
that reads files already there on the device pipeline never loads it); the files are read by our own reader
of the documented format (https://www.cs.toronto.edu/~kriz/cifar.html), so downloaded files and
hand-made ones (tests, mirrors) go through the same code. No md5 check on read: a damaged file
fails the format checks instead.
"""

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from dst_cli.data.base import (
    Data,
    Loader,
    LoaderSettings,
    check_enough_for_one_batch,
    choice,
    count,
    data_error,
    data_root,
)
from dst_cli.data.loaders import PlannedDataset, TensorLoader, WorkerLoader, plan_for
from dst_cli.data.sampling import seeded_generator
from dst_cli.data.transforms import CropFlip, Normalize
from dst_cli.errors import UserError

CROP_PADDING = 4
IMAGE_SHAPE = (3, 32, 32)
PIPELINES = ("auto", "device", "workers")


@dataclass(frozen=True)
class CifarFormat:
    name: str
    archive: str  # name of the torchvision.datasets class whose url / filename / tgz_md5 we download
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    normalize: Normalize


CIFAR_FORMATS = {
    "cifar10": CifarFormat(
        name="cifar10",
        archive="CIFAR10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        normalize=Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), scale=255.0),
    ),
    "cifar100": CifarFormat(
        name="cifar100",
        archive="CIFAR100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        normalize=Normalize((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), scale=255.0),
    ),
}


def _how_to_provide(fmt: CifarFormat) -> str:
    return (
        f"put the CIFAR python-version folder {fmt.folder}/ under dataset.root (set dataset.root=... "
        "or the DST_DATA_DIR environment variable), or run with dataset.download=true and network access"
    )


def locate_files(fmt: CifarFormat, root: Path, download: bool) -> Path:
    """The folder holding the pickle files, downloading the archive first when allowed and needed."""
    folder = root / fmt.folder
    if all((folder / name).is_file() for name in fmt.train_files + fmt.test_files):
        return folder
    if download:
        try:
            import torchvision.datasets
            from torchvision.datasets.utils import download_and_extract_archive

            archive = getattr(torchvision.datasets, fmt.archive)
            download_and_extract_archive(archive.url, str(root), filename=archive.filename, md5=archive.tgz_md5)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad checksum a RuntimeError
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}"
            raise data_error(fmt.name, root, f"download failed ({reason})", _how_to_provide(fmt)) from error
        return locate_files(fmt, root, download=False)
    missing = ", ".join(name for name in fmt.train_files + fmt.test_files if not (folder / name).is_file())
    raise data_error(fmt.name, folder, f"files not found ({missing})", _how_to_provide(fmt))


def read_batch_files(fmt: CifarFormat, paths: list[Path]) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels from pickle files {'data': (n, 3072) uint8, label_key: [n]}."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as file:
                entry = pickle.load(file, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, *IMAGE_SHAPE)
            file_labels = np.asarray(entry[fmt.label_key], dtype=np.int64)
        except OSError as error:  # e.g. no read permission
            raise data_error(fmt.name, path, f"cannot read the file ({error.strerror or error})",
                             "make it readable") from None
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
            problem = f"unreadable file ({type(error).__name__})"
            raise data_error(fmt.name, path, problem, _how_to_provide(fmt)) from error
        labels_in_range = file_labels.min(initial=0) >= 0 and file_labels.max(initial=0) < fmt.num_classes
        if len(file_labels) != len(data) or not labels_in_range:
            problem = "malformed file (labels do not match the images)"
            raise data_error(fmt.name, path, problem, _how_to_provide(fmt))
        images.append(data)
        labels.append(file_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def hold_out(num_samples: int, val_size: int, split_seed: int) -> tuple[Tensor, Tensor]:
    """Sorted (train, val) indices: `val_size` training samples chosen by a fixed seed, not the run seed."""
    order = torch.randperm(num_samples, generator=seeded_generator("held-out validation", split_seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


class PilImages(Dataset):
    """(PIL image, label) pairs from uint8 tensors, as the classic torchvision pipeline expects."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # HWC for PIL
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.labels[index]


@dataclass(frozen=True)
class PilCropFlip:
    """Per-image twin of the device pipeline: same parameters, same result."""

    augment: CropFlip
    normalize: Normalize

    def __call__(self, image: Image.Image, params: list[int] | None) -> Tensor:
        if params is not None:
            image = self.augment.apply_image(image, params)
        import torchvision.transforms.functional as TF

        return self.normalize(TF.pil_to_tensor(image))


def make_loader(
    fmt: CifarFormat,
    images: Tensor,
    labels: Tensor,
    train: bool,
    pipeline: str,
    num_workers: int,
    settings: LoaderSettings,
) -> Loader:
    """`device` (also `auto`): uint8 images on the device, whole-batch augmentation there;
    `workers`: classic DataLoader with PIL transforms in `num_workers` processes."""
    crop_flip = CropFlip(CROP_PADDING)
    plan = plan_for(len(labels), settings, train)
    if pipeline == "workers":
        dataset = PlannedDataset(PilImages(images, labels), PilCropFlip(crop_flip, fmt.normalize))
        return WorkerLoader(dataset, plan, crop_flip.draw if train else None, settings.device, num_workers)
    augment = crop_flip if train else None
    return TensorLoader(images.to(settings.device), labels.to(settings.device), plan, fmt.normalize, augment)


def build_cifar(
    variant: str,
    settings: LoaderSettings,
    root: str | None = None,
    download: bool = True,
    pipeline: str = "auto",
    num_workers: int = 4,
    val_size: int = 0,
    split_seed: int = 0,
) -> Data:
    """CIFAR-10 or -100 (`variant`), python version, looked for in <root>; downloaded there if missing.

    root: the data folder (the DST_DATA_DIR environment variable, else ./data)
    download: download the archive when the files are missing
    pipeline: auto (= device) | device: augment whole batches on the training device | workers: DataLoader + PIL
    num_workers: DataLoader worker processes (pipeline=workers only)
    val_size: training images held out as a validation set (0: none)
    split_seed: fixes which images are held out, independently of the run seed
    """
    fmt = CIFAR_FORMATS[variant]
    pipeline = choice("pipeline", pipeline, PIPELINES)
    val_size = count("val_size", val_size)
    num_workers = count("num_workers", num_workers)
    folder = locate_files(fmt, data_root(root), bool(download))
    train_images, train_labels = read_batch_files(fmt, [folder / name for name in fmt.train_files])
    test_images, test_labels = read_batch_files(fmt, [folder / name for name in fmt.test_files])
    if val_size >= len(train_labels):
        raise UserError(
            f"dataset.val_size={val_size} must be smaller than the {len(train_labels)} training images of {fmt.name}"
        )

    train_indices, val_indices = hold_out(len(train_labels), val_size, split_seed)
    check_enough_for_one_batch(fmt.name, len(train_indices), settings)

    def loader(images: Tensor, labels: Tensor, train: bool) -> Loader:
        return make_loader(fmt, images, labels, train, pipeline, num_workers, settings)

    return Data(
        train=loader(train_images[train_indices], train_labels[train_indices], train=True),
        val=loader(train_images[val_indices], train_labels[val_indices], train=False) if val_size else None,
        test=loader(test_images, test_labels, train=False),
        num_classes=fmt.num_classes,
        input_shape=IMAGE_SHAPE,
    )


build_cifar10 = partial(build_cifar, "cifar10")
build_cifar100 = partial(build_cifar, "cifar100")
