"""scikit-learn's 8x8 handwritten digits: offline, small, held on the device."""

import torch
from torch import Tensor

from dst_cli.data.base import Data, LoaderSettings, check_enough_for_one_batch
from dst_cli.data.loaders import TensorLoader, plan_for
from dst_cli.data.transforms import channel_normalize
from dst_cli.errors import UserError

PIXEL_MAX = 16.0  # load_digits pixels are whole numbers 0..16


def split_sizes(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sample counts; fractions are of the whole set."""
    if not (0 <= val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise UserError(
            f"dataset digits: val_fraction={val_fraction} and test_fraction={test_fraction} must satisfy "
            "0 <= val_fraction, 0 < test_fraction and val_fraction + test_fraction < 1"
        )
    val, test = round(val_fraction * total), round(test_fraction * total)
    return total - val - test, val, test


def stratified_split(labels: Tensor, val_size: int, test_size: int, split_seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted (train, val, test) indices, each split with the class proportions of the whole set."""
    from sklearn.model_selection import train_test_split  # imported here: sklearn adds ~2 s to every start

    indices = torch.arange(len(labels))
    rest, test = train_test_split(indices, test_size=test_size, stratify=labels, random_state=split_seed)
    if val_size == 0:
        return rest.sort().values, torch.empty(0, dtype=torch.long), test.sort().values
    train, val = train_test_split(rest, test_size=val_size, stratify=labels[rest], random_state=split_seed)
    return train.sort().values, val.sort().values, test.sort().values


def build_digits(
    settings: LoaderSettings, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0
) -> Data:
    """scikit-learn's 8x8 digits split stratified into train / val / test (fractions of the whole set)."""
    from sklearn.datasets import load_digits  # imported here: sklearn adds ~1-2 s to every start

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.tensor(digits.target, dtype=torch.long)
    _, val_size, test_size = split_sizes(len(labels), val_fraction, test_fraction)
    train_indices, val_indices, test_indices = stratified_split(labels, val_size, test_size, split_seed)
    check_enough_for_one_batch("digits", len(train_indices), settings)

    normalize = channel_normalize(images[train_indices], scale=PIXEL_MAX)
    images, labels = images.to(settings.device), labels.to(settings.device)

    def loader(indices: Tensor, train: bool) -> TensorLoader:
        indices = indices.to(settings.device)
        return TensorLoader(images[indices], labels[indices], plan_for(len(indices), settings, train), normalize)

    return Data(
        train=loader(train_indices, train=True),
        val=loader(val_indices, train=False) if val_size else None,
        test=loader(test_indices, train=False),
        num_classes=10,
        input_shape=(1, 8, 8),
    )
