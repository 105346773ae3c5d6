"""The digits loader and split read and split without sklearn, yet give exactly what sklearn gives."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from dst_cli.data.base import LoaderSettings
from dst_cli.data.digits import (
    approximate_mode,
    build_digits,
    load_digits_arrays,
    stratified_shuffle_split,
    stratified_split,
)
from dst_cli.errors import UserError

sklearn_datasets = pytest.importorskip("sklearn.datasets")
sklearn_split = pytest.importorskip("sklearn.model_selection")


@pytest.fixture(scope="module")
def digits_labels() -> torch.Tensor:
    return load_digits_arrays()[1]


def test_loaded_images_and_labels_equal_sklearns_load_digits():
    images, labels = load_digits_arrays()
    reference = sklearn_datasets.load_digits()
    assert (images.shape, images.dtype, labels.shape, labels.dtype) == (
        (1797, 1, 8, 8), torch.uint8, (1797,), torch.int64
    )
    assert np.array_equal(images.squeeze(1).numpy(), reference.images)
    assert np.array_equal(labels.numpy(), reference.target)


def sklearn_stratified_split(labels, val_size, test_size, seed):
    """What stratified_split did with sklearn: two stratified train_test_split calls, then sorted."""
    rest, test = sklearn_split.train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
    )
    if val_size == 0:
        return np.sort(rest), np.empty(0, dtype=np.int64), np.sort(test)
    train, val = sklearn_split.train_test_split(rest, test_size=val_size, stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2024])
@pytest.mark.parametrize("val_size, test_size", [(180, 359), (0, 359), (10, 10), (17, 853), (900, 233), (45, 11)])
def test_split_is_sklearns_train_test_split_on_the_digits_labels(digits_labels, seed, val_size, test_size):
    ours = stratified_split(digits_labels, val_size, test_size, seed)
    reference = sklearn_stratified_split(digits_labels.numpy(), val_size, test_size, seed)
    for indices, expected in zip(ours, reference):
        assert indices.dtype == torch.int64
        assert np.array_equal(indices.numpy(), expected)


@pytest.mark.parametrize("seed", range(20))
def test_unsorted_split_order_is_sklearns_on_uneven_classes(seed):
    """Small, uneven classes make the tie-breaking draws of approximate_mode matter; the order is compared too."""
    rng = np.random.RandomState(1000 + seed)
    labels = rng.choice([3, 5, 8, 11], size=int(rng.randint(20, 60)), p=[0.1, 0.2, 0.3, 0.4])
    labels[:8] = [3, 3, 5, 5, 8, 8, 11, 11]  # at least two of each class, as a stratified split needs
    test_size = int(rng.randint(4, len(labels) - 4))
    rest, test = stratified_shuffle_split(labels, test_size, seed)
    expected_rest, expected_test = sklearn_split.train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
    )
    assert np.array_equal(rest, expected_rest) and np.array_equal(test, expected_test)


def test_approximate_mode_hand_computed():
    # 4:2 of 3 draws: 2 and 1 exactly; 2,2,2,1 of 2 draws: three tied remainders of 4/7, two of them drawn.
    assert approximate_mode(np.array([4, 2]), 3, np.random.RandomState(0)).tolist() == [2, 1]
    tied = approximate_mode(np.array([2, 2, 2, 1]), 2, np.random.RandomState(0))
    assert tied.sum() == 2 and tied[3] == 0 and tied.max() == 1


def test_building_digits_imports_neither_sklearn_nor_scipy():
    code = (
        "import sys, torch\n"
        "from dst_cli.data.digits import LoaderSettings, build_digits\n"
        "build_digits(LoaderSettings(batch_size=64, eval_batch_size=64, seed=0, device=torch.device('cpu')))\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'sklearn', 'scipy', 'matplotlib'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


SETTINGS = LoaderSettings(batch_size=64, eval_batch_size=64, seed=0, device=torch.device("cpu"))


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"test_fraction": 0.004}, "test_fraction=0.004 gives 7 samples, fewer than the 10 classes"),
        ({"val_fraction": 0.003}, "val_fraction=0.003 gives 5 samples, fewer than the 10 classes"),
    ],
)
def test_a_split_smaller_than_the_classes_is_a_user_error(fractions, message):
    with pytest.raises(UserError, match=message):
        build_digits(SETTINGS, **fractions)


def test_missing_scikit_learn_is_a_user_error_naming_the_package(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match="needs the scikit-learn package.*pip install scikit-learn"):
        load_digits_arrays()
