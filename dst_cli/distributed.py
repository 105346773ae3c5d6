"""Data parallelism through torch.distributed (one process per device, started by torchrun)."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from dst_cli.errors import UserError


class MasksDiverged(Exception):
    """The ranks hold different masks: their models no longer train the same network."""


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: torch.device) -> Context:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU); one process: no group."""
    if not launched_by_torchrun():
        return Context(0, 1, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def stop(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_across_ranks(values: Tensor, context: Context) -> Tensor:
    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def min_across_ranks(values: Tensor, context: Context) -> Tensor:
    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return values


def any_rank(flag: bool, context: Context) -> bool:
    """True on every rank if `flag` is true on some rank (so all ranks take the same branch)."""
    if not context.distributed:
        return flag
    value = torch.tensor([int(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mask_checksums(masks: list[Tensor]) -> Tensor:
    """One int64 per layer that changes when any mask entry moves: sum of position weights of active entries."""
    sums = []
    for mask in masks:
        positions = torch.arange(1, mask.numel() + 1, device=mask.device, dtype=torch.int64)
        sums.append((positions * 2654435761 % 2147483647 * mask.flatten()).sum())
    return torch.stack(sums)


def verify_masks_agree(masks: list[Tensor], names: list[str], step: int, context: Context) -> None:
    """Compare every rank's mask checksums after a mask update; raise MasksDiverged if any differ."""
    local = mask_checksums(masks)
    gathered = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(gathered, local)
    differing = [names[i] for i in range(len(names)) if any(g[i] != gathered[0][i] for g in gathered)]
    if differing:
        raise MasksDiverged(
            f"the ranks' masks differ after the mask update at step {step} (layers: {', '.join(differing)})"
        )
