"""The training loop of a run built and prepared by dst_cli.build, in a fixed order.

Per step: lr -> forward -> backward -> engine.step() (the mask update when due, on the dense gradient of
this batch; the optimizer step; the inactive weights back to 0). Per epoch: evaluate, append metrics.jsonl
(the row is on disk before the checkpoint that covers it), checkpoint. Metrics accumulate on the device and
are read once per epoch (no syncs in the loop).
"""
import logging
import math
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from dst_cli import distributed
from dst_cli.checkpoint import check_finite, copy_checkpoint, save_checkpoint
from dst_cli.console import EpochProgress
from dst_cli.errors import UserError
from dst_cli.metrics import MetricsLog, finite_or_none, save_summary
from dst_cli.rundir import RunDir
from dst_cli.signals import StopRequest, signals_held, stop_on_signals
from dst_cli.sparse import SparseEngine, inference_flops_ratio

if TYPE_CHECKING:
    from dst_cli.build import Run

log = logging.getLogger("dst_cli")

# With several processes, a stop signal is acted on at the first multiple of this many steps, so that
# all ranks stop at the same step without a host-device sync every step.
DISTRIBUTED_STOP_CHECK_STEPS = 20


class NonFiniteLoss(Exception):
    pass


class Interrupted(Exception):
    """A stop signal was acted on at `step`; `checkpoint` is the file written then (None: trainer.checkpoint=false)."""

    def __init__(self, stop: StopRequest, step: int, checkpoint: Path | None):
        super().__init__(f"stopped by {stop.signal_name or 'a signal to another rank'} at step {step}")
        self.stop, self.step, self.checkpoint = stop, step, checkpoint


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    engine: SparseEngine | None,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training iteration; `engine=None` trains dense (the benchmark's baseline). Returns (loss, logits).

    engine.step() runs the mask update when one is due (on this batch's dense gradient), the optimizer step
    and the zeroing of the inactive weights."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs)
        loss = criterion(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if engine is None:
        optimizer.step()
    else:
        engine.step()
    return loss.detach(), logits.detach()


NO_STEP = 2**62  # "no non-finite loss yet"; the minimum over ranks is the earliest bad step


class EpochTotals:
    """Running sums of the epoch in progress (this rank's batches), on the device; part of a mid-epoch checkpoint."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = torch.zeros((), device=device, dtype=torch.long)
        self.first_nonfinite_step = torch.full((), NO_STEP, device=device, dtype=torch.long)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, step: int) -> None:
        self.loss_sum += loss * len(targets)
        self.correct += (logits.argmax(dim=1) == targets).sum()
        self.seen += len(targets)
        first_bad = (self.first_nonfinite_step == NO_STEP) & ~torch.isfinite(loss)
        self.first_nonfinite_step.masked_fill_(first_bad, step)

    def state_dict(self, context: distributed.Context) -> dict:
        """Every rank's own sums, [world_size, 4] in float64 (exact for float32 and int64 counts below 2**53, and
        for NO_STEP): summing them into one would round differently from the uninterrupted epoch. Collective."""
        local = torch.stack([self.loss_sum.double(), self.correct.double(), self.seen.double(),
                             self.first_nonfinite_step.double()])
        return {"per_rank": distributed.gather(local, context).cpu()}

    def load_state_dict(self, state: dict, context: distributed.Context) -> None:
        per_rank = state["per_rank"]
        if len(per_rank) != context.world_size:  # each rank's share of the epoch's batches would differ
            raise UserError(f"the checkpoint was taken mid-epoch with {len(per_rank)} process(es); resume with "
                            f"the same number (torchrun --nproc_per_node={len(per_rank)})")
        loss_sum, correct, seen, first_nonfinite_step = per_rank[context.rank].tolist()
        self.loss_sum.fill_(loss_sum)
        self.correct.fill_(int(correct))
        self.seen.fill_(int(seen))
        self.first_nonfinite_step.fill_(int(first_nonfinite_step))


class Trainer:
    """Runs the loop of a built Run in its run dir: epochs, evaluation, metrics, checkpoints and the summary.

    dst_cli.build.prepare makes it: it loads a checkpoint (load_state_dict) and opens the files (open_files)."""

    def __init__(self, run: "Run", paths: RunDir, versions: dict, overrides: list[str]):
        self.run_parts, self.paths, self.versions, self.overrides = run, paths, versions, overrides
        self.dist, self.device, self.data = run.dist, run.device, run.data
        self.model, self.forward_model, self.optimizer = run.model, run.forward_model, run.optimizer
        self.criterion, self.engine, self.layer_flops = run.criterion, run.engine, run.layer_flops
        self.bf16, self.memory_format, self.threads = run.bf16, run.memory_format, run.threads
        self.steps_per_epoch, self.total_steps = run.steps_per_epoch, run.total_steps
        self.lr_schedule, self.peak_lrs = run.lr_schedule, run.peak_lrs
        self.settings = run.recipe["trainer"]
        self.epochs = self.settings["epochs"]
        self.monitor = "val/acc" if self.data.val is not None else "test/acc"
        self.step, self.epoch, self.wall_time_s = 0, 0, 0.0
        self.best = {"value": -math.inf, "epoch": None, "test_acc": None}
        self.totals: EpochTotals | None = None
        self.metrics: MetricsLog | None = None

    def to_loggers(self, call: str, record: dict) -> None:
        """Hand a metrics row (log) or the summary (finish) to every logger. A tracker that fails mid-run
        (a server gone, a full disk of its own) is a warning and is dropped: metrics.jsonl and summary.json
        keep everything, and the run goes on."""
        for name, logger in list(self.run_parts.loggers.items()):
            try:
                getattr(logger, call)(record)
            except Exception as error:
                log.warning("logger %s failed (%s: %s); it gets nothing more from this run, metrics.jsonl has "
                            "everything", name, type(error).__name__, " ".join(str(error).split()))
                del self.run_parts.loggers[name]

    def open_files(self, metrics: MetricsLog, resumed: bool) -> None:
        """Rank 0: metrics.jsonl (cut back to the checkpoint's epoch) and the loggers."""
        self.metrics = metrics
        for logger in self.run_parts.loggers.values():
            logger.start(self.paths.path, self.run_parts.recipe, resumed)

    # ----- the loop -----
    def fit(self, stop: StopRequest) -> None:
        epochs = self.epochs
        mode = self.settings["progress"] if self.dist.is_main else "none"
        progress = EpochProgress(mode, self.total_steps, self.step)
        with progress.running():
            for epoch in range(self.epoch + 1, epochs + 1):
                progress.start_epoch(epoch)
                started = time.perf_counter()
                if self.totals is None:  # a fresh epoch (not one resumed mid-way)
                    self.totals = EpochTotals(self.device)
                    self.engine.mark_epoch()
                self.train_epoch(epoch, progress, stop)
                row = self.end_epoch(epoch)
                row["time/epoch_s"] = time.perf_counter() - started
                self.wall_time_s += row["time/epoch_s"]
                if self.dist.is_main:
                    self.metrics.append(row)
                    self.to_loggers("log", row)
                self.save(row)
                progress.end_epoch(row, epochs)

    def train_epoch(self, epoch: int, progress: EpochProgress, stop: StopRequest) -> None:
        self.model.train()
        done_in_epoch = self.step - (epoch - 1) * self.steps_per_epoch  # > 0 when resuming mid-epoch
        for inputs, targets in self.data.train.batches(epoch, done_in_epoch):
            self.step += 1
            factor = self.lr_schedule.factor(self.step)
            for group, peak in zip(self.optimizer.param_groups, self.peak_lrs):
                group["lr"] = peak * factor
            loss, logits = train_step(
                self.forward_model, self.criterion, self.optimizer, self.engine,
                inputs.contiguous(memory_format=self.memory_format), targets, self.bf16,
            )
            self.totals.add(loss, logits, targets, self.step)
            progress.advance()
            if self.stop_now(stop):
                raise Interrupted(stop, self.step, self.save_last())

    def stop_now(self, stop: StopRequest) -> bool:
        if not self.dist.distributed:
            return stop.requested
        if self.step % DISTRIBUTED_STOP_CHECK_STEPS:
            return False
        return distributed.any_rank(stop.requested, self.dist)

    def end_epoch(self, epoch: int) -> dict:
        """Reduce the epoch's totals over ranks (one sync), stop on a non-finite loss, evaluate."""
        totals = self.totals
        first_nonfinite_step = int(distributed.min_across_ranks(totals.first_nonfinite_step.clone(), self.dist))
        if first_nonfinite_step != NO_STEP:
            raise NonFiniteLoss(f"the training loss became non-finite at step {first_nonfinite_step}")
        sums = distributed.sum_across_ranks(
            torch.stack([totals.loss_sum.double(), totals.correct.double(), totals.seen.double()]), self.dist
        )
        loss_sum, correct, seen = sums.tolist()
        row = {"epoch": epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
               "train/loss": loss_sum / seen, "train/acc": correct / seen}
        for split in ("val", "test"):
            loader = getattr(self.data, split)
            if loader is not None:
                row[f"{split}/loss"], row[f"{split}/acc"] = self.evaluate(loader)
        stats = self.engine.stats()
        row.update({
            "mask/density": stats["density"],
            "mask/explored": stats["explored"],
            "mask/turnover": stats["turnover"],
            "flops/train_ratio": self.train_flops_ratio(),
        })
        self.totals = None
        self.epoch = epoch
        return row

    @torch.no_grad()
    def evaluate(self, loader) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for inputs, targets in loader.batches(0):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(inputs.contiguous(memory_format=self.memory_format)).float()
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            seen += len(targets)
        return loss_sum.item() / seen, correct.item() / seen

    def train_flops_ratio(self) -> float:
        return self.engine.training_flops_ratio(self.layer_flops)

    # ----- checkpoints -----
    def save(self, row: dict) -> None:
        improved = row[self.monitor] > self.best["value"]
        if improved:
            self.best = {"value": row[self.monitor], "epoch": row["epoch"], "test_acc": row["test/acc"]}
        self.save_last()
        if improved and self.dist.is_main and self.settings["checkpoint"]:
            copy_checkpoint(self.paths.last_checkpoint, self.paths.best_checkpoint)

    def save_last(self) -> Path | None:
        """Write checkpoints/last.pt (rank 0); the path written, or None with trainer.checkpoint=false.

        Called on every rank (the state gathers every rank's epoch totals), and every rank refuses a non-finite
        state (NonFiniteState), so that all stop together and last.pt stays the last good state."""
        if not self.settings["checkpoint"]:
            return None
        state = self.state_dict()
        if self.dist.is_main:
            save_checkpoint(self.paths.last_checkpoint, state)
        else:
            check_finite(state, self.paths.last_checkpoint)
        return self.paths.last_checkpoint

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
            "epoch_totals": None if self.totals is None else self.totals.state_dict(self.dist),
            "best": self.best,
            "wall_time_s": self.wall_time_s,
            "rng": rng,
            "metrics": list(self.metrics.rows) if self.metrics is not None else [],  # rank 0's: the ones it writes
            "config": self.run_parts.recipe,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint of the same recipe (dst_cli.build.prepare compares them)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.engine.load_state_dict(state["sparse"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.best, self.wall_time_s = state["best"], state["wall_time_s"]
        if state["epoch_totals"] is not None:
            self.totals = EpochTotals(self.device)
            self.totals.load_state_dict(state["epoch_totals"], self.dist)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    # ----- summary -----
    def summary(self, status: str, error: str | None) -> dict:
        last = self.metrics.rows[-1] if self.metrics.rows else {}
        recipe, labels = self.run_parts.recipe, self.run_parts.labels
        stats = self.engine.stats()
        return {
            "status": status,
            "error": error,
            "run_dir": str(self.paths.path),
            **labels,
            "sparsity": recipe["sparsity"],
            "distribution": recipe["distribution"],
            "seed": recipe["seed"],
            "overrides": self.overrides,
            "epochs": self.epochs,
            "epochs_completed": self.epoch,
            "steps": self.step,
            "total_steps": self.total_steps,
            "final_test_acc": last.get("test/acc"),
            "final_test_loss": finite_or_none(last.get("test/loss")),
            "final_train_loss": finite_or_none(last.get("train/loss")),
            "best_test_acc": self.best["test_acc"],
            "best_epoch": self.best["epoch"],
            "best_metric": self.monitor,
            "best_metric_value": finite_or_none(self.best["value"]),
            "density": stats["density"],
            "explored": stats["explored"],
            "train_flops_ratio": self.train_flops_ratio(),
            "inference_flops_ratio": inference_flops_ratio(self.layer_flops, self.engine.densities),
            "wall_time_s": self.wall_time_s,
            "world_size": self.dist.world_size,
            "effective_batch_size": recipe["trainer"]["batch_size"] * self.dist.world_size,
            "mask_checks": self.engine.mask_checks,
            "device": device_name(self.device),
            "threads_choice": self.run_parts.threads_choice,
            "versions": self.versions,
            "backend": stats["backend"],
            "layers": stats["layers"],
            "recipe": recipe,
        }

    def run(self) -> dict:
        """fit() and, on rank 0, write summary.json whatever happens (if at all possible: a full disk is logged)."""
        status, error = "failed", None
        try:
            with stop_on_signals() as stop:
                self.fit(stop)
            status = "completed"
        except (Interrupted, KeyboardInterrupt) as exc:
            status, error = "interrupted", str(exc) or "KeyboardInterrupt"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            with signals_held():  # a stop signal now (torchrun's, after another rank died) waits for summary.json
                summary = self.summary(status, error) if self.dist.is_main else {}
                if self.dist.is_main:
                    problem = save_summary(self.paths.summary, summary)
                    if problem:
                        log.error("%s", problem)
                    self.metrics.close()
                    self.to_loggers("finish", summary)
            distributed.stop(self.dist)
        return summary


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as file:
            names = [line.split(":", 1)[1].strip() for line in file if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()
