"""train(cfg, run_dir) -> summary dict: one flat training loop in a fixed order.

Per step: lr -> forward -> backward -> mask update (on update steps, dense gradient of this batch)
-> optimizer step -> zero the inactive weights. Per epoch: evaluate, append metrics.jsonl,
checkpoint. Metrics accumulate on the device and are read once per epoch (no syncs in the loop).
"""
import logging
import math
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dst_cli.checkpoint import copy_checkpoint, last_checkpoint, load_checkpoint, save_checkpoint
from dst_cli.config import validate_config
from dst_cli.console import EpochProgress
from dst_cli.data import build_data
from dst_cli.errors import UserError
from dst_cli.flops import inference_flops_ratio, layer_flops, training_flops_ratio
from dst_cli.metrics import MetricsLog, finite_or_none, write_json
from dst_cli.models import build_model
from dst_cli.optim import build_optimizer, learning_rate, set_learning_rate
from dst_cli.sparse.acquisition import build_acquisition
from dst_cli.sparse.engine import SparseEngine
from dst_cli.sparse.schedule import UpdateSchedule

log = logging.getLogger("dst_cli")

# Settings that may change between a run and its resumption without changing the result.
RESUME_NEUTRAL_KEYS = (
    "trainer.progress", "trainer.device", "trainer.checkpoint", "trainer.eval_batch_size", "trainer.compile",
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    return torch.device(name)


class NonFiniteLoss(Exception):
    pass


def resolve_switch(value: str | bool, device: torch.device) -> bool:
    """`auto` means on for CUDA, off for CPU."""
    return device.type == "cuda" if value == "auto" else bool(value)


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    engine: SparseEngine | None,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    step: int,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; `engine=None` trains dense (the benchmark's baseline). Returns (loss, logits)."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs)
        loss = criterion(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if engine is not None:
        engine.before_optimizer_step(step)
    optimizer.step()
    if engine is not None:
        engine.after_optimizer_step()
    return loss.detach(), logits.detach()


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.device = resolve_device(cfg.trainer.device)
        torch.manual_seed(cfg.seed)
        self.data = build_data(
            cfg.dataset, cfg.trainer.batch_size, cfg.seed, self.device, eval_batch_size=cfg.trainer.eval_batch_size
        )
        self.bf16 = resolve_switch(cfg.trainer.bf16, self.device)
        self.memory_format = (
            torch.channels_last if resolve_switch(cfg.trainer.channels_last, self.device) else torch.contiguous_format
        )
        self.model = build_model(
            **cfg.model, num_classes=self.data.num_classes, input_shape=self.data.input_shape
        ).to(self.device, memory_format=self.memory_format)
        self.forward_model = torch.compile(self.model) if cfg.trainer.compile else self.model
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.steps_per_epoch = len(self.data.train)
        if self.steps_per_epoch == 0:
            raise UserError(
                f"trainer.batch_size={cfg.trainer.batch_size} is larger than the training set; "
                "allowed: at most the number of training samples"
            )
        self.total_steps = cfg.trainer.epochs * self.steps_per_epoch
        schedule_options = {key: value for key, value in cfg.schedule.items() if key != "name"}
        schedule = UpdateSchedule(**schedule_options, total_steps=self.total_steps)
        generator = torch.Generator(self.device).manual_seed(cfg.seed)
        acq_options = {key: value for key, value in cfg.acq.items() if key != "name"}
        self.engine = SparseEngine(
            self.model, self.optimizer, cfg.sparsity, cfg.distribution, schedule,
            build_acquisition(cfg.acq.name, generator, **acq_options), generator,
            cfg.dense_first_layer, cfg.dense_last_layer,
        )
        self.layer_flops = layer_flops(self.model, self.data.input_shape)
        self.monitor = "val/acc" if self.data.val is not None else "test/acc"
        self.step, self.epoch, self.wall_time_s = 0, 0, 0.0
        self.best = {"value": -math.inf, "epoch": None, "test_acc": None}
        checkpoint = last_checkpoint(run_dir)
        if checkpoint is not None:
            self.resume(load_checkpoint(checkpoint, self.device))
            log.info("resumed from %s at epoch %d, step %d", checkpoint, self.epoch, self.step)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", keep_epochs=self.epoch)

    # ----- the loop -----
    def fit(self) -> None:
        epochs = self.cfg.trainer.epochs
        progress = EpochProgress(self.cfg.trainer.progress, self.total_steps, self.step)
        with progress.running():
            for epoch in range(self.epoch + 1, epochs + 1):
                progress.start_epoch(epoch)
                started = time.perf_counter()
                masks_before = self.engine.masks.snapshot()
                train_loss, train_acc = self.train_epoch(epoch, progress)
                if not math.isfinite(train_loss):
                    raise NonFiniteLoss(f"training loss became non-finite in epoch {epoch}")
                row = {"epoch": epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                       "train/loss": train_loss, "train/acc": train_acc}
                for split in ("val", "test"):
                    loader = getattr(self.data, split)
                    if loader is not None:
                        row[f"{split}/loss"], row[f"{split}/acc"] = self.evaluate(loader)
                row.update(self.mask_metrics(masks_before))
                row["time/epoch_s"] = time.perf_counter() - started
                self.wall_time_s += row["time/epoch_s"]
                self.epoch = epoch
                self.metrics.append(row)
                self.save(row)
                progress.end_epoch(row, epochs)

    def train_epoch(self, epoch: int, progress: EpochProgress) -> tuple[float, float]:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for inputs, targets in self.data.train.batches(epoch):
            self.step += 1
            set_learning_rate(
                self.optimizer,
                learning_rate(self.cfg.optim, self.step, self.steps_per_epoch, self.cfg.trainer.epochs),
            )
            loss, logits = train_step(
                self.forward_model, self.criterion, self.optimizer, self.engine,
                inputs.contiguous(memory_format=self.memory_format), targets, self.step, self.bf16,
            )
            loss_sum += loss * len(targets)
            correct += (logits.argmax(dim=1) == targets).sum()
            seen += len(targets)
            progress.advance()
        return loss_sum.item() / seen, correct.item() / seen

    @torch.no_grad()
    def evaluate(self, loader) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for inputs, targets in loader.batches(0):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.forward_model(inputs.contiguous(memory_format=self.memory_format)).float()
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            seen += len(targets)
        return loss_sum.item() / seen, correct.item() / seen

    def mask_metrics(self, masks_before: list[torch.Tensor]) -> dict:
        masks = self.engine.masks
        return {
            "mask/density": masks.nonzero_density(),
            "mask/explored": masks.explored_share(),
            "mask/turnover": masks.turnover_since(masks_before),
            "flops/train_ratio": self.train_flops_ratio(),
        }

    def train_flops_ratio(self) -> float:
        return training_flops_ratio(
            self.layer_flops, self.engine.densities, self.step, self.engine.dense_gradient_updates(self.step)
        )

    # ----- checkpoints -----
    def save(self, row: dict) -> None:
        improved = row[self.monitor] > self.best["value"]
        if improved:
            self.best = {"value": row[self.monitor], "epoch": row["epoch"], "test_acc": row["test/acc"]}
        if not self.cfg.trainer.checkpoint:
            return
        last = self.run_dir / "checkpoints" / "last.pt"
        save_checkpoint(last, self.state_dict())
        if improved:
            copy_checkpoint(last, last.with_name("best.pt"))

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sparse": self.engine.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best": self.best,
            "wall_time_s": self.wall_time_s,
            "rng": rng,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def resume(self, state: dict) -> None:
        changed = config_changes(state["config"], OmegaConf.to_container(self.cfg, resolve=True))
        if changed:
            raise UserError(
                f"{self.run_dir} holds a checkpoint of a different config ({'; '.join(changed)}); "
                "use a new run dir or the same overrides"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.engine.load_state_dict(state["sparse"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.best, self.wall_time_s = state["best"], state["wall_time_s"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    # ----- summary -----
    def summary(self, status: str, error: str | None) -> dict:
        last = self.metrics.rows[-1] if self.metrics.rows else {}
        cfg = self.cfg
        return {
            "status": status,
            "error": error,
            "run_dir": str(self.run_dir),
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "acq": cfg.acq.name,
            "sparsity": cfg.sparsity,
            "distribution": cfg.distribution,
            "schedule": cfg.schedule.name,
            "seed": cfg.seed,
            "overrides": task_overrides(),
            "epochs": cfg.trainer.epochs,
            "epochs_completed": self.epoch,
            "steps": self.step,
            "final_test_acc": last.get("test/acc"),
            "final_test_loss": finite_or_none(last.get("test/loss")),
            "final_train_loss": finite_or_none(last.get("train/loss")),
            "best_test_acc": self.best["test_acc"],
            "best_epoch": self.best["epoch"],
            "best_metric": self.monitor,
            "density": self.engine.masks.nonzero_density(),
            "explored": self.engine.masks.explored_share(),
            "train_flops_ratio": self.train_flops_ratio(),
            "inference_flops_ratio": inference_flops_ratio(self.layer_flops, self.engine.densities),
            "wall_time_s": self.wall_time_s,
            "world_size": 1,
            "effective_batch_size": cfg.trainer.batch_size,
            "layers": self.engine.masks.layer_report(),
        }

    def run(self) -> dict:
        """fit() and write summary.json whatever happens."""
        status, error = "failed", None
        try:
            self.fit()
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            summary = self.summary(status, error)
            write_json(self.run_dir / "summary.json", summary)
        return summary


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs, except RESUME_NEUTRAL_KEYS."""
    changes = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if path in RESUME_NEUTRAL_KEYS:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            changes += config_changes(before, after, path + ".")
        elif before != after:
            changes.append(f"{path}: {before} -> {after}")
    return changes


def task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train(cfg: DictConfig, run_dir: Path) -> dict:
    validate_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(cfg, run_dir).run()
