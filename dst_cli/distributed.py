"""Data parallelism through torch.distributed (one process per device, started by torchrun).

torch is imported inside the functions: dst_cli.cli asks launched_by_torchrun() before PyTorch loads.
(The masks' agreement across ranks is the sparse engine's own check: dst_cli.sparse.MasksDiverged.)

Exit status: each rank exits 128+signal after a graceful stop (143 for SIGTERM), but torchrun itself exits 1
whenever a worker exits non-zero: launch_agent raises ChildFailedError for the failed workers
(torch/distributed/launcher/api.py:386 in torch 2.14) and that uncaught exception ends torchrun with status 1;
a signal sent to torchrun itself is re-raised by its agent (torch/distributed/elastic/agent/server/api.py:752-756).
A job scheduler that looks at the status therefore sees 1; the ranks' own statuses are in torchrun's
ChildFailedError block ("exitcode: 143"). Nothing inside dst-train can change that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dst_cli.errors import UserError

if TYPE_CHECKING:
    import torch


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
    import torch
    import torch.distributed as dist

    if not launched_by_torchrun():
        return Context(0, 1, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Imported before the group exists: torch.distributed.nn.functional binds group.WORLD as a default
        # argument when first imported (by torch._dynamo, with the first optimizer); imported after, it keeps
        # the group alive past destroy_process_group and gloo's threads abort the exit now and then.
        import torch.distributed.nn  # noqa: F401

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def stop(context: Context) -> None:
    import torch.distributed as dist

    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_across_ranks(values: torch.Tensor, context: Context) -> torch.Tensor:
    import torch.distributed as dist

    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def min_across_ranks(values: torch.Tensor, context: Context) -> torch.Tensor:
    import torch.distributed as dist

    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return values


def gather(values: torch.Tensor, context: Context) -> torch.Tensor:
    """[world_size, *values.shape]: every rank's `values`, in rank order (collective; one process: values[None])."""
    if not context.distributed:
        return values.unsqueeze(0)
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(values) for _ in range(context.world_size)]
    dist.all_gather(parts, values)
    return torch.stack(parts)


def any_rank(flag: bool, context: Context) -> bool:
    """True on every rank if `flag` is true on some rank (so all ranks take the same branch)."""
    if not context.distributed:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
