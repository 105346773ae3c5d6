"""Time training steps of dense vs dynamic sparse training, through the code the trainer runs.

Every method gets its own model, optimizer and (sparse methods) SparseEngine, built by dst_cli.build.build_run
from the dst-train config (synthetic data of the given shape), and trains on one fixed batch with
dst_cli.train.train_step. Two costs are measured apart:

  step:   a regular training step (forward, backward, engine.step(): optimizer step, zeroing the inactive
          weights); apply: the zeroing alone (the masks' multiply), the only per-step work dense training lacks;
  update: one mask update (engine.update: drop and grow in every layer), on the gradients of the step before it.

amortised = step + update / update_interval. Methods are timed in alternating blocks (the order rotates
every block) and each time is the median over blocks. The ratio to dense pairs each block's step time with
the dense step time of the same block (the median of these step ratios) and adds the update's share,
median update / update_interval / median dense step, so that the drift of a shared machine cancels out.
CUDA is synchronised only around the timed regions.

Memory: "state B/w" is engine.state_bytes_per_weight(), the bytes of mask state (masks, explored flags, epoch
snapshot, EE's N counters) per prunable weight, exact. Peak memory of a method, and its difference to dense, is
measured while it is built and warmed up, the other methods idle:
CUDA: torch.cuda.max_memory_allocated above what was allocated before;
CPU (Linux): the peak resident set size (VmHWM) above the resident size before, after returning freed heap
memory to the system (malloc_trim) and resetting the peak (/proc/self/clear_refs). With --compile on CPU
this includes the compiler's own memory.

Sparse training here is a dense computation on masked weights (no sparse kernels): a ratio of 1 means
"no overhead over dense training", not "faster than dense".

    python scripts/bench.py --model vgg19 --width 0.25 --batch-size 64     # -> outputs/bench/bench.json
"""
import argparse
import ctypes
import gc
import json
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table
from torch import nn

from dst_cli.build import build_run, resolve_device
from dst_cli.errors import UserError
from dst_cli.models import MODELS
from dst_cli.sparse import SparseEngine, acquisition_names
from dst_cli.sparse.engine import BACKENDS
from dst_cli.train import train_step

DENSE = "dense"
DEFAULT_OUT = Path("outputs/bench/bench.json")
# The benchmark's schedule runs this many update intervals, so every measured update is near its start
# (drop fraction ~0.5, the largest, as in the first updates of a real run).
SCHEDULE_LENGTH_IN_UPDATES = 10_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time dense vs sparse training steps (dst_cli's train_step + SparseEngine) on synthetic "
        "batches; print a table and write it as JSON.",
        epilog="Example: python scripts/bench.py --model vgg19 --width 0.25 --batch-size 64 "
        "--out outputs/bench/w025.json",
    )
    parser.add_argument("--model", default="vgg19", choices=list(MODELS),
                        help="model (default: vgg19)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width factor (default: 1.0)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    parser.add_argument("--input-shape", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"),
                        help="shape of one input (default: 3 32 32)")
    parser.add_argument("--num-classes", type=int, default=10, help="number of classes (default: 10)")
    parser.add_argument("--methods", nargs="+", default=["ee", "rigl", "set", "random"],
                        choices=acquisition_names(),
                        help="sparse methods timed against dense (default: ee rigl set random)")
    parser.add_argument("--sparsity", type=float, default=0.98, help="sparsity, ERK-distributed (default: 0.98)")
    parser.add_argument("--backend", type=lambda text: text.split(","), default=["masked"],
                        help="how the sparse methods compute, one or several of masked,sparse,auto (comma-separated; "
                             "each method is timed on each, side by side; default: masked). Per-layer kernels and "
                             "timings of sparse / auto go into the JSON")
    parser.add_argument("--update-interval", type=int, default=100,
                        help="steps between mask updates, for the amortised cost (default: 100)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when present (default: auto)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on for CUDA, off for CPU, as dst-train)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last memory format (default: on for CUDA, off for CPU, as dst-train)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (default: off)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: as dst-train's trainer.threads=auto)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps per method before timing, plus one untimed update (default: 5)")
    parser.add_argument("--blocks", type=int, default=10, help="timed blocks per method (default: 10)")
    parser.add_argument("--block-steps", type=int, default=5,
                        help="regular steps per block, then one update (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models, masks and batch (default: 0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON file of the results, written at the end (default: {DEFAULT_OUT})")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    positive = {"--width": args.width, "--batch-size": args.batch_size, "--num-classes": args.num_classes,
                "--blocks": args.blocks, "--block-steps": args.block_steps}
    for flag, value in positive.items():
        if value <= 0:
            raise UserError(f"{flag}={value} is invalid; allowed: a number > 0")
    if args.update_interval < 2:
        raise UserError(f"--update-interval={args.update_interval} is invalid; allowed: an integer >= 2")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads={args.threads} is invalid; allowed: an integer >= 1")
    if args.warmup < 1:
        raise UserError(f"--warmup={args.warmup} is invalid; allowed: an integer >= 1")
    unknown = [backend for backend in args.backend if backend not in BACKENDS]
    if unknown:
        raise UserError(f"--backend={','.join(args.backend)} is invalid; allowed: a comma-separated list of "
                        f"{', '.join(BACKENDS)}")
    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity={args.sparsity} is invalid; allowed: a number in [0, 1)")
    if args.out.is_dir():
        raise UserError(f"--out={args.out} is a directory; allowed: a file path (its folder is created)")
    try:  # before measuring: a folder that cannot be made fails now, not after minutes of timing
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out={args.out} cannot be written ({error.strerror}); allowed: a file in a writable folder")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Settings:
    """What every method shares: device, numerics and the synthetic batch."""

    device: torch.device
    bf16: bool
    memory_format: torch.memory_format
    inputs: torch.Tensor
    targets: torch.Tensor


@dataclass
class Runner:
    """One method's model, optimizer and engine (None: dense), and its measurements."""

    method: str
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    engine: SparseEngine | None
    update_interval: int
    updates_done: int = 0
    step_seconds: list[float] = field(default_factory=list)  # per block: mean seconds of a regular step
    update_seconds: list[float] = field(default_factory=list)  # per block: seconds of one update
    apply_seconds: list[float] = field(default_factory=list)  # per block: seconds of one zeroing of the weights
    peak_memory_bytes: int | None = None

    def regular_steps(self, settings: Settings, count: int) -> None:
        for _ in range(count):
            train_step(self.forward_model, self.criterion, self.optimizer, self.engine,
                       settings.inputs, settings.targets, bf16=settings.bf16)

    def update(self) -> None:
        """One mask update at the next update step, on the gradients left by the last regular step."""
        self.updates_done += 1
        self.engine.update(self.updates_done * self.update_interval)


def run_overrides(method: str, backend: str, args: argparse.Namespace) -> list[str]:
    """The dst-train config of one method: the model on synthetic data of one batch per epoch; the schedule runs
    SCHEDULE_LENGTH_IN_UPDATES update intervals, so every measured update is near its start. Dense: sparsity 0
    (its engine is never called)."""
    switch = lambda value: "auto" if value is None else str(value).lower()
    return [
        f"model={args.model}", *([f"model.width={args.width}"] if args.width != 1.0 else []),
        "dataset=synthetic", f"dataset.shape=[{','.join(map(str, args.input_shape))}]",
        f"dataset.num_classes={args.num_classes}", f"dataset.train_size={args.batch_size}", "dataset.test_size=1",
        f"trainer.batch_size={args.batch_size}", f"trainer.epochs={args.update_interval * SCHEDULE_LENGTH_IN_UPDATES}",
        f"trainer.device={args.device}", f"trainer.threads={args.threads or 'auto'}",
        f"trainer.bf16={switch(args.bf16)}", f"trainer.channels_last={switch(args.channels_last)}",
        f"trainer.compile={str(args.compile).lower()}", f"seed={args.seed}",
        f"sparsity={0.0 if method == DENSE else args.sparsity}",
        "distribution=erk", "schedule=itop", f"schedule.update_interval={args.update_interval}",
        f"acq={'static' if method == DENSE else method}", f"backend={backend}",
    ]


def build_runner(method: str, args: argparse.Namespace, backend: str = "masked") -> tuple[Runner, Settings]:
    """The method's model, optimizer and engine as dst-train builds them (dense: the same without the engine)."""
    with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=run_overrides(method, backend, args))
    run = build_run(cfg)
    inputs, targets = next(run.data.train.batches(0))
    settings = Settings(run.device, run.bf16, run.memory_format, inputs.contiguous(memory_format=run.memory_format),
                        targets)
    engine = None if method == DENSE else run.engine
    return Runner(method, run.forward_model, run.optimizer, run.criterion, engine, args.update_interval), settings


def warm_up(runner: Runner, settings: Settings, steps: int) -> None:
    """Untimed steps (and one update) before timing."""
    runner.regular_steps(settings, steps)
    if runner.engine is not None:
        runner.update()
        runner.regular_steps(settings, 1)
    synchronize(settings.device)


def status_kb(key: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in kB."""
    with open("/proc/self/status") as file:
        return int(re.search(rf"^{key}:\s+(\d+) kB", file.read(), re.MULTILINE).group(1))


def release_free_heap() -> None:
    """Hand freed heap memory back to the system (glibc), so that its reuse shows up as RSS growth."""
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


class PeakMemory:
    """Peak memory used above the level at entry, while the block runs; `bytes` is None where unsupported."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: int | None = None

    @staticmethod
    def description(device: torch.device) -> str | None:
        if device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocation before the method was built"
        if Path("/proc/self/clear_refs").exists():
            return "peak RSS (VmHWM) above the RSS before the method was built, after malloc_trim"
        return None

    def __enter__(self) -> "PeakMemory":
        gc.collect()  # an earlier runner caught in a reference cycle would be freed mid-measurement otherwise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        elif self.description(self.device) is not None:
            release_free_heap()
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
            self.start = status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.description(self.device) is not None:
            self.bytes = status_kb("VmHWM") * 1024 - self.start


def prepare(args: argparse.Namespace) -> tuple[Settings, list[Runner]]:
    """Build and warm up every method (measuring its peak memory), after a throwaway warm-up of the libraries."""
    # One-time costs (library initialisation, workspaces) would otherwise land on the first method measured.
    warm_up(*build_runner(DENSE, args), 2)
    runners = []
    cases = [(DENSE, "masked")] + [(method, backend) for method in args.methods for backend in args.backend]
    for method, backend in cases:
        with PeakMemory(resolve_device(args.device)) as peak:
            runner, settings = build_runner(method, args, backend)
            warm_up(runner, settings, args.warmup)
        runner.peak_memory_bytes = peak.bytes
        if method != DENSE and len(args.backend) > 1:
            runner.method = f"{method}/{backend}"
        runners.append(runner)
    return settings, runners


def timed(action, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    action()
    synchronize(device)
    return time.perf_counter() - started


def measure(runners: list[Runner], settings: Settings, blocks: int, block_steps: int) -> None:
    """Alternating blocks: every method runs `block_steps` regular steps and one update per block."""
    for block in range(blocks):
        shift = block % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            seconds = timed(lambda: runner.regular_steps(settings, block_steps), settings.device)
            runner.step_seconds.append(seconds / block_steps)
            if runner.engine is not None:
                runner.apply_seconds.append(timed(runner.engine.masks.apply, settings.device))
                runner.update_seconds.append(timed(runner.update, settings.device))


def results(runners: list[Runner]) -> list[dict]:
    dense = runners[0]
    dense_step = statistics.median(dense.step_seconds)
    megabytes = lambda runner: None if runner.peak_memory_bytes is None else runner.peak_memory_bytes / 2**20
    rows = []
    for runner in runners:
        step = statistics.median(runner.step_seconds)
        update = statistics.median(runner.update_seconds) if runner.update_seconds else 0.0
        sparse = runner.engine is not None
        step_ratio = statistics.median(s / d for s, d in zip(runner.step_seconds, dense.step_seconds))
        rows.append({
            "method": runner.method,
            "step_ms": 1e3 * step,
            "apply_ms": 1e3 * statistics.median(runner.apply_seconds) if sparse else None,
            "update_ms": 1e3 * update if sparse else None,
            "amortised_ms": 1e3 * (step + update / runner.update_interval),
            "step_ratio": step_ratio,
            "ratio": step_ratio + update / runner.update_interval / dense_step,
            "state_bytes_per_weight": runner.engine.state_bytes_per_weight() if sparse else None,
            "peak_memory_mb": megabytes(runner),
            "peak_memory_vs_dense_mb": None if megabytes(runner) is None else megabytes(runner) - megabytes(dense),
            "block_step_ms": [1e3 * seconds for seconds in runner.step_seconds],
            **(compute_details(runner.engine) if sparse else {}),
        })
    return rows


def compute_details(engine: SparseEngine) -> dict:
    """How the engine's sparse layers computed: the backend's line, and per layer its kernel and (sparse /
    auto) the forward + backward milliseconds of each candidate at the layer's timing."""
    backend = engine.backend
    return {
        "backend": engine.compute_summary(),
        "layer_kernels": backend.kernels if backend is not None else dict.fromkeys(engine.names, "masked"),
        "layer_timings_ms": {} if backend is None else {
            name: {kernel: 1e3 * seconds for kernel, seconds in times.items()} for name, times in backend.timings().items()},
    }


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_model()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            match = re.search(r"^model name\s*:\s*(.+)$", file.read(), re.MULTILINE)
        return match.group(1) if match else platform.processor()
    except OSError:
        return platform.processor()


def print_table(report: dict) -> None:
    settings = report["settings"]
    title = (f"{settings['model']} x{settings['width']:g}, batch {settings['batch_size']}, "
             f"{'x'.join(map(str, settings['input_shape']))}, sparsity {settings['sparsity']:g}, "
             f"update every {settings['update_interval']} steps, {settings['device']}")
    caption = ("times in ms, medians over blocks; ratio = amortised step / dense step (paired by block); "
               "state B/w = engine state bytes per prunable weight")
    table = Table(title=title, caption=caption)
    columns = {"method": None, "step": ("step_ms", ".2f"), "apply": ("apply_ms", ".2f"), "update": ("update_ms", ".2f"),
               "amortised": ("amortised_ms", ".2f"), "step ratio": ("step_ratio", ".3f"), "ratio": ("ratio", ".3f"),
               "state B/w": ("state_bytes_per_weight", ".3f"), "peak MB": ("peak_memory_mb", ".1f"),
               "vs dense MB": ("peak_memory_vs_dense_mb", "+.1f")}
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report["results"]:
        cells = ["-" if row[key] is None else format(row[key], spec) for key, spec in list(columns.values())[1:]]
        table.add_row(row["method"], *cells)
    console = Console()
    console.print(table, width=max(console.width, 120))  # all ten columns readable, even in a narrow terminal


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    check_args(args)
    settings, runners = prepare(args)
    measure(runners, settings, args.blocks, args.block_steps)
    report = {
        "settings": {
            "model": args.model, "width": args.width, "batch_size": args.batch_size,
            "input_shape": list(args.input_shape), "num_classes": args.num_classes, "sparsity": args.sparsity,
            "distribution": "erk", "update_interval": args.update_interval, "device": str(settings.device),
            "bf16": settings.bf16, "channels_last": settings.memory_format == torch.channels_last,
            "compile": args.compile, "warmup": args.warmup, "blocks": args.blocks, "block_steps": args.block_steps,
            "seed": args.seed,
        },
        "machine": machine(settings.device),
        "memory_measure": PeakMemory.description(settings.device),
        "results": results(runners),
    }
    print_table(report)
    write_report(report, args.out)
    print(f"bench: wrote {args.out}")
    return report


def write_report(report: dict, out: Path) -> None:
    """Write the JSON whole or not at all (through a temporary file in the same folder)."""
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(out)


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        sys.exit(2)
