"""Which samples form each batch, and the seed of each batch's augmentation.

Everything here is a pure function of (seed, epoch, batch index): a resumed run that starts at
batch b sees exactly the batches b, b+1, ... of an uninterrupted epoch, and all ranks of a
multi-process run agree on the epoch's permutation without talking to each other.
"""

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

# Draws the random augmentation parameters of `count` samples (one row per sample).
DrawParams = Callable[[int, torch.Generator], Tensor]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part; stable across processes and Python runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded from `parts` (never the global torch RNG)."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The training order of one epoch, identical on every rank."""
    return torch.randperm(num_samples, generator=seeded_generator("permutation", seed, epoch))


@dataclass(frozen=True)
class BatchPlan:
    """Batch layout of one loader for one rank.

    Training (`train=True`): each epoch is a fresh permutation cut into global batches of
    batch_size * world_size samples; the incomplete last one is dropped, and rank r takes the
    r-th block of batch_size samples of every global batch. Augmentation parameters are drawn
    for the whole global batch from a generator seeded by (seed, epoch, batch), so a sample's
    augmentation does not depend on how many ranks share the work.
    Evaluation (`train=False`): every sample once, in stored order, last batch possibly short,
    no augmentation; every rank sees all samples, so eval metrics need no all-reduce.
    """

    num_samples: int
    batch_size: int
    train: bool
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __len__(self) -> int:
        if self.train:
            return self.num_samples // (self.batch_size * self.world_size)
        return -(-self.num_samples // self.batch_size)

    def batches(
        self, epoch: int, start: int = 0, draw_params: DrawParams | None = None
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Yield (sample indices, augmentation parameters or None) for batches start, start+1, ..."""
        if self.train:
            yield from self._train_batches(epoch, start, draw_params)
        else:
            for batch in range(start, len(self)):
                begin = batch * self.batch_size
                yield torch.arange(begin, min(begin + self.batch_size, self.num_samples)), None

    def _train_batches(
        self, epoch: int, start: int, draw_params: DrawParams | None
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        permutation = epoch_permutation(self.num_samples, self.seed, epoch)
        global_size = self.batch_size * self.world_size
        rank_block = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for batch in range(start, len(self)):
            indices = permutation[batch * global_size : (batch + 1) * global_size][rank_block]
            params = None
            if draw_params is not None:
                generator = seeded_generator("augment", self.seed, epoch, batch)
                params = draw_params(global_size, generator)[rank_block]
            yield indices, params
