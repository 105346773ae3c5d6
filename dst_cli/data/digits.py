"""scikit-learn's 8x8 handwritten digits: offline, small, held on the device.

The data file ships with scikit-learn; it is read and split here without importing sklearn (with scipy, ~1-5 s
of every start), giving exactly what sklearn's load_digits and stratified train_test_split give.
"""

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dst_cli.data.base import Data, LoaderSettings
from dst_cli.data.loaders import tensor_data
from dst_cli.data.transforms import channel_normalize
from dst_cli.errors import UserError

PIXEL_MAX = 16.0  # load_digits pixels are whole numbers 0..16
NUM_CLASSES = 10
DATA_FILE = "datasets/data/digits.csv.gz"  # inside the installed sklearn package


def split_sizes(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sample counts; fractions are of the whole set."""
    if not (0 <= val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise UserError(
            f"dataset digits: val_fraction={val_fraction} and test_fraction={test_fraction} must satisfy "
            "0 <= val_fraction, 0 < test_fraction and val_fraction + test_fraction < 1"
        )
    val, test = round(val_fraction * total), round(test_fraction * total)
    return total - val - test, val, test


def load_digits_arrays() -> tuple[Tensor, Tensor]:
    """(images uint8 (1797, 1, 8, 8), labels int64 (1797,)) as sklearn.datasets.load_digits reads them.

    Mirrors sklearn/datasets/_base.py load_digits and load_gzip_compressed_csv_data (scikit-learn 1.9): the
    gzipped CSV rows are 64 pixels then the label. find_spec locates the package without executing it.
    """
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / DATA_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise UserError("dataset digits needs the scikit-learn package (its digits data file): pip install scikit-learn")
    with gzip.open(path, mode="rt", encoding="utf-8") as text:
        rows = np.loadtxt(text, delimiter=",")
    images = torch.from_numpy(rows[:, :-1].reshape(-1, 1, 8, 8)).to(torch.uint8)
    labels = torch.from_numpy(rows[:, -1].astype(np.int64))
    return images, labels


def approximate_mode(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class counts summing to `draws`, proportional to class_counts; leftover draws go to the largest
    fractional parts, ties broken with `rng`. Same result and rng use as sklearn/utils/extmath.py
    _approximate_mode (scikit-learn 1.9)."""
    continuous = class_counts / class_counts.sum() * draws
    counts = np.floor(continuous)
    missing = int(draws - counts.sum())
    remainder = continuous - counts
    for value in np.unique(remainder)[::-1]:  # largest remainder first
        if missing == 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        counts[chosen] += 1
        missing -= len(chosen)
    return counts.astype(int)


def stratified_shuffle_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (rest, test) into `labels`, in the order that sklearn's
    train_test_split(positions, test_size=test_size, stratify=labels, random_state=seed) returns them.

    Mirrors sklearn/model_selection/_split.py StratifiedShuffleSplit._iter_indices (scikit-learn 1.9) draw for
    draw on numpy's RandomState; callers keep test_size and len(labels) - test_size >= the number of classes.
    """
    rng = np.random.RandomState(seed)
    _, class_of, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(class_counts)[:-1])
    rest_counts = approximate_mode(class_counts, len(labels) - test_size, rng)
    test_counts = approximate_mode(class_counts - rest_counts, test_size, rng)
    rest, test = [], []
    for positions, in_rest, in_test in zip(members, rest_counts, test_counts):
        shuffled = positions[rng.permutation(len(positions))]
        rest.append(shuffled[:in_rest])
        test.append(shuffled[in_rest : in_rest + in_test])
    return rng.permutation(np.concatenate(rest)), rng.permutation(np.concatenate(test))


def stratified_split(labels: Tensor, val_size: int, test_size: int, split_seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted (train, val, test) indices, each split with the class proportions of the whole set: the test set
    split off first, then val from the rest, with the same seed (two stratified train_test_split calls)."""
    labels = labels.numpy()
    rest, test = stratified_shuffle_split(labels, test_size, split_seed)
    if val_size == 0:
        train, val = rest, np.empty(0, dtype=np.int64)
    else:
        train_positions, val_positions = stratified_shuffle_split(labels[rest], val_size, split_seed)
        train, val = rest[train_positions], rest[val_positions]
    return tuple(torch.from_numpy(np.sort(indices)) for indices in (train, val, test))


def check_splits_hold_every_class(val_size: int, test_size: int, val_fraction: float, test_fraction: float) -> None:
    """A stratified split needs at least one sample per class (no validation split at all is allowed)."""
    for name, fraction, size in (("test_fraction", test_fraction, test_size), ("val_fraction", val_fraction, val_size)):
        if size < NUM_CLASSES and not (name == "val_fraction" and size == 0):
            raise UserError(
                f"dataset digits: {name}={fraction} gives {size} samples, fewer than the {NUM_CLASSES} classes"
            )


def build_digits(
    settings: LoaderSettings, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0
) -> Data:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes; offline), split stratified by class.

    val_fraction: share of the whole set held out for validation
    test_fraction: share of the whole set held out for testing
    split_seed: fixes the split independently of the run seed
    """
    images, labels = load_digits_arrays()
    _, val_size, test_size = split_sizes(len(labels), val_fraction, test_fraction)
    check_splits_hold_every_class(val_size, test_size, val_fraction, test_fraction)
    train_indices, val_indices, test_indices = stratified_split(labels, val_size, test_size, split_seed)
    normalize = channel_normalize(images[train_indices], scale=PIXEL_MAX)
    splits = {name: (images[indices], labels[indices])
              for name, indices in zip(("train", "val", "test"), (train_indices, val_indices, test_indices))}
    return tensor_data("digits", splits, settings, normalize, NUM_CLASSES, (1, 8, 8))
