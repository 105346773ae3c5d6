"""Bit-packing of flat bool tensors (torch has no packbits): 1 bit per weight for the explored flags and the
mask snapshots."""
import functools

import torch
from torch import Tensor


# Lookup tables are made once per device: a new one per call would be a host-to-GPU copy the host waits for.
@functools.cache
def _bit_values(device: torch.device) -> Tensor:
    return torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)


@functools.cache
def _popcount(device: torch.device) -> Tensor:
    """Number of set bits of every byte value."""
    return torch.tensor([bin(byte).count("1") for byte in range(256)], dtype=torch.uint8, device=device)


def pack_bits(flags: Tensor) -> Tensor:
    """A flat bool tensor as uint8, 8 flags per byte (the last byte zero-padded)."""
    padded = torch.zeros(-(-flags.numel() // 8) * 8, dtype=torch.uint8, device=flags.device)
    padded[: flags.numel()] = flags
    return (padded.view(-1, 8) * _bit_values(flags.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, numel: int) -> Tensor:
    """The flat bool tensor of `numel` flags that pack_bits packed."""
    bits = packed.unsqueeze(1).bitwise_and(_bit_values(packed.device)).ne(0)
    return bits.flatten()[:numel]


def count_bits(packed: Tensor) -> Tensor:
    """How many flags are set in a pack_bits tensor (a 0-dim int64 tensor)."""
    return _popcount(packed.device)[packed.long()].sum()
