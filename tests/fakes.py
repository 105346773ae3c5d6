"""Fake datasets on disk in the real formats: CIFAR-10/100 python-version pickles and an ImageFolder tree.

Used by the tests and by scripts/gpu_check.sh, which writes a full-size fake CIFAR-10 with
`python tests/fakes.py DIR --per-file 10000 --test-count 10000`.
"""

import argparse
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def fake_cifar_images(count: int, seed: int) -> np.ndarray:
    """`count` random images as stored in the CIFAR files: uint8 rows of 3072 = 3 x 32 x 32 values."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))


def write_fake_cifar10(root: Path, per_file: int = 8, test_count: int = 10) -> None:
    """5 training batches of `per_file` images + a test batch, labels i % 10, as in the python version."""
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        labels = [(j + i) % 10 for j in range(per_file)]
        batch = {"batch_label": f"training batch {i} of 5", "labels": labels, "data": fake_cifar_images(per_file, i)}
        write_pickle(folder / f"data_batch_{i}", batch)
    labels = [j % 10 for j in range(test_count)]
    batch = {"batch_label": "testing batch 1 of 1", "labels": labels, "data": fake_cifar_images(test_count, 0)}
    write_pickle(folder / "test_batch", batch)
    write_pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072})


def write_fake_cifar100(root: Path, train_count: int = 40, test_count: int = 10) -> None:
    """One training and one test file; fine labels (7 j) % 100, coarse labels fine // 5."""
    folder = root / "cifar-100-python"
    for name, count, seed in [("train", train_count, 1), ("test", test_count, 0)]:
        fine = [(7 * j) % 100 for j in range(count)]
        coarse = [f // 5 for f in fine]
        content = {"fine_labels": fine, "coarse_labels": coarse, "data": fake_cifar_images(count, seed)}
        write_pickle(folder / name, content)
    names = {"fine_label_names": [f"f{c}" for c in range(100)], "coarse_label_names": [f"c{c}" for c in range(20)]}
    write_pickle(folder / "meta", names)


def write_fake_image_folder(root: Path) -> None:
    """train: 3 images per class (PNG, odd sizes); val: 2 per class (JPEG); classes cat and dog."""
    colours = {"cat": (200, 30, 30), "dog": (30, 30, 200)}
    for class_name, colour in colours.items():
        for i, size in enumerate([(40, 30), (25, 50), (64, 64)]):
            path = root / "train" / class_name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, colour).save(path)
        for i in range(2):
            path = root / "val" / class_name / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (30, 20), colour).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a fake CIFAR-10 in the python-version format.")
    parser.add_argument("root", type=Path, help="dataset.root: the files go to ROOT/cifar-10-batches-py/")
    parser.add_argument("--per-file", type=int, default=10_000, help="images per training file (5 files)")
    parser.add_argument("--test-count", type=int, default=10_000, help="images in the test file")
    args = parser.parse_args()
    write_fake_cifar10(args.root, args.per_file, args.test_count)


if __name__ == "__main__":
    main()
