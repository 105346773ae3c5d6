"""The composition root: build_run(cfg) makes everything a run needs, in one place and one order.

check_run(cfg) -> threads -> device / process group -> seed -> data -> model -> FLOPs count -> optimizer
-> criterion -> sparsify(). Every value error on the way (the schema, torch refusing an argument, a plug-in
refusing its keyword arguments, the library's SparseConfigError) becomes a UserError naming the config key.
Used by dst_cli.train, scripts/bench.py and the tests.
"""
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dst_cli import distributed
from dst_cli.config import (
    ScheduleConfig, check_arguments, check_config, locate, plugin_kwargs, resolve_threads,
)
from dst_cli.data import Data, build_data
from dst_cli.errors import UserError
from dst_cli.models import build_model
from dst_cli.optim import build_optimizer
from dst_cli.sparse import SparseConfigError, SparseEngine, layer_flops, make_acquisition, sparsify

SCHEDULE_KEYS = tuple(name for name in ScheduleConfig.__dataclass_fields__ if name != "name")


@dataclass
class Run:
    """Everything a run trains with; `forward_model` is `model` behind DDP and/or torch.compile."""

    dist: distributed.Context
    device: torch.device
    threads: int
    bf16: bool
    memory_format: torch.memory_format
    data: Data
    model: nn.Module
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    engine: SparseEngine
    layer_flops: dict[str, int]
    steps_per_epoch: int
    total_steps: int


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    return torch.device(name)


def resolve_switch(value: str | bool, device: torch.device) -> bool:
    """`auto` means on for CUDA, off for CPU."""
    return device.type == "cuda" if value == "auto" else bool(value)


def library_error(error: SparseConfigError) -> UserError:
    """The library names its options as config keys (sparsity, acq.c, schedule.update_interval, ...)."""
    message = " ".join(str(error).split())
    return UserError(message if message.startswith(error.key) else f"{error.key}: {message}")


def acquisition_spec(cfg: DictConfig) -> tuple[str | type, dict]:
    """(a registered name or the class named by acq._target_, its options)."""
    options = plugin_kwargs(cfg.acq)
    if "_target_" in cfg.acq:
        return locate("acq", cfg.acq._target_), options
    return cfg.acq.name, options


def schedule_overrides(cfg: DictConfig) -> dict:
    """The schedule keys that are set (null: the preset's value)."""
    return {key: cfg.schedule[key] for key in SCHEDULE_KEYS if cfg.schedule[key] is not None}


def init_options(cfg: DictConfig, data: Data, memory_format: torch.memory_format) -> dict:
    """The inputs of a scored initial mask (snip / grasp / synflow): the first training batches and the loss."""
    if cfg.init.name == "random":
        return {}
    batches = [(x.contiguous(memory_format=memory_format), y)
               for _, (x, y) in zip(range(cfg.init.batches), data.train.batches(0))]
    return {"loss_fn": criterion(cfg), "batches": batches, "iterations": cfg.init.iterations,
            "temperature": cfg.init.temperature}


def check_run(cfg: DictConfig) -> None:
    """Every value error that can be found without data: the schema, the plug-ins' arguments, the acquisition
    options, the optimizer's and the loss's arguments. Cheap; called before anything is written."""
    check_config(cfg)
    for group, offered in (("model", ("num_classes", "input_shape")), ("dataset", ("settings",))):
        path = cfg[group]._target_
        check_arguments(group, path, locate(group, path), plugin_kwargs(cfg[group]), offered)
    acq, options = acquisition_spec(cfg)
    try:
        make_acquisition(acq, **options)
    except SparseConfigError as error:
        raise library_error(error) from None
    except (ValueError, TypeError) as error:  # a user class refusing its options
        raise UserError(f"acq: {' '.join(str(error).split())}") from None
    build_optimizer(cfg.optim, nn.Linear(1, 1))
    criterion(cfg)


def criterion(cfg: DictConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)


def build_run(cfg: DictConfig) -> Run:
    check_run(cfg)
    threads = resolve_threads(cfg.trainer.threads)
    torch.set_num_threads(threads)
    dist = distributed.start(resolve_device(cfg.trainer.device))
    device = dist.device
    torch.manual_seed(cfg.seed)
    data = build_data(
        cfg.dataset, cfg.trainer.batch_size, cfg.seed, device, rank=dist.rank, world_size=dist.world_size,
        eval_batch_size=cfg.trainer.eval_batch_size,
    )
    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise UserError(f"trainer.batch_size={cfg.trainer.batch_size} is larger than the training set; "
                        "allowed: at most the number of training samples")
    bf16 = resolve_switch(cfg.trainer.bf16, device)
    # channels_last exists for batches of images (4-d tensors) only
    image_batches = len(data.input_shape) == 3
    channels_last = resolve_switch(cfg.trainer.channels_last, device) and image_batches
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg.model, data.num_classes, data.input_shape).to(device, memory_format=memory_format)
    flops = layer_flops(model, tuple(data.input_shape))
    forward_model = model
    if dist.distributed:
        forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.trainer.compile:
        mode = None if cfg.trainer.compile is True else cfg.trainer.compile
        forward_model = torch.compile(forward_model, mode=mode)
    optimizer = build_optimizer(cfg.optim, model)
    total_steps = cfg.trainer.epochs * steps_per_epoch
    acq, acq_options = acquisition_spec(cfg)
    try:
        engine = sparsify(
            model, optimizer, sparsity=cfg.sparsity, total_steps=total_steps, acq=acq, acq_options=acq_options,
            distribution=cfg.distribution, dense_first_layer=cfg.dense_first_layer,
            dense_last_layer=cfg.dense_last_layer, schedule=cfg.schedule.name, seed=cfg.seed,
            init=cfg.init.name, init_options=init_options(cfg, data, memory_format), **schedule_overrides(cfg),
        )
    except SparseConfigError as error:
        raise library_error(error) from None
    return Run(dist, device, threads, bf16, memory_format, data, model, forward_model, optimizer, criterion(cfg),
               engine, flops, steps_per_epoch, total_steps)
