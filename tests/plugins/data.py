"""A dataset callable as a user writes one: torch Datasets of (tensor, label), no dst_cli imports."""
import torch
from torch.utils.data import TensorDataset


def make_data(size: int = 512, features: int = 16, classes: int = 3, seed: int = 0):
    """Gaussian blobs: class c is centred on 2 * e_c; returns (train, val, test) TensorDatasets of
    shapes (features,) with int labels; the test and val sets are a quarter of the training size."""
    generator = torch.Generator().manual_seed(seed)
    centres = 2 * torch.eye(classes, features)

    def split(count: int) -> TensorDataset:
        labels = torch.arange(count) % classes
        return TensorDataset(centres[labels] + torch.randn(count, features, generator=generator), labels)

    return split(size), split(size // 4), split(size // 4)
