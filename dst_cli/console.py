"""What a run shows on the terminal: a rich progress bar on a TTY, plain log lines otherwise.

Epoch lines always go through logging, so Hydra's file handler writes them to train.log in every mode.
In bar mode the terminal handlers are pointed at the live display for the run: the lines appear above
the bar, without the log prefix, and never tear the bar.
"""
import logging
import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

log = logging.getLogger("dst_cli")
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
COLUMN_WIDTH = 10  # every column but the epoch's: "explored" or "12345.6s" and a two-space gap
MULTIRUN_FLAGS = ("-m", "--multirun")


def starting_line(args: list[str]) -> str:
    """The line printed on Enter, before PyTorch loads (which takes seconds)."""
    settings = " ".join(arg for arg in args if arg not in MULTIRUN_FLAGS)
    what = "a sweep" if any(flag in args for flag in MULTIRUN_FLAGS) else "a run"
    return f"dst-train: starting {what} with {settings or 'the defaults'} (loading PyTorch...)"


def announce_start(args: list[str]) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(starting_line(args), flush=True)


def job_label() -> str:
    """'[job N] ' inside a Hydra multirun, else ''."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    return f"[job {HydraConfig.get().job.num}] "


def in_parallel_launcher() -> bool:
    """True in a job of a launcher that runs jobs side by side (joblib, SLURM): their bars would collide."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return HydraConfig.get().launcher.get("_target_") != BASIC_LAUNCHER


def resolve_mode(mode: str) -> str:
    """trainer.progress (one of dst_cli.config.PROGRESS_MODES) -> bar | log | none."""
    if mode != "auto":
        return mode
    return "bar" if sys.stdout.isatty() and not in_parallel_launcher() else "log"


def epoch_columns(row: dict, epochs: int) -> list[tuple[str, str]]:
    """(header, cell) pairs of one epoch line; 'val' only when the dataset has a validation split."""
    percent = lambda key: f"{100 * row[key]:.2f}%"
    columns = [("epoch", f"{row['epoch']}/{epochs}"), ("loss", f"{row['train/loss']:.4f}"),
               ("train", percent("train/acc"))]
    if "val/acc" in row:
        columns.append(("val", percent("val/acc")))
    columns += [("test", percent("test/acc")), ("density", percent("mask/density")),
                ("explored", percent("mask/explored")), ("time", f"{row['time/epoch_s']:.1f}s")]
    return columns


def aligned(cells: list[str], epoch_width: int) -> str:
    return cells[0].rjust(epoch_width) + "".join(cell.rjust(COLUMN_WIDTH) for cell in cells[1:])


class EpochProgress:
    """Step bar for the current run (bar mode) plus one aligned line per epoch under a header (bar and log)."""

    def __init__(self, mode: str, total_steps: int, done_steps: int):
        self.mode = resolve_mode(mode)
        self.label = job_label()
        self.header_logged = False
        self.progress = None
        if self.mode == "bar":
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(bar_width=None), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                console=Console(), expand=True,
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=done_steps, epoch="-", last="")

    @contextmanager
    def running(self):
        if self.progress is None:
            yield self
            return
        with self.progress, terminal_logging_through(self.progress.console):
            yield self

    def start_epoch(self, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, epoch=epoch)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def end_epoch(self, row: dict, epochs: int) -> None:
        if self.mode == "none":
            return
        headers, cells = zip(*epoch_columns(row, epochs))
        epoch_width = max(len(f"{epochs}/{epochs}"), len("epoch"))
        if not self.header_logged:
            log.info("%s%s", self.label, aligned(list(headers), epoch_width))
            self.header_logged = True
        log.info("%s%s", self.label, aligned(list(cells), epoch_width))
        if self.progress is not None:
            self.progress.update(self.task, last=f"test {100 * row['test/acc']:.2f}%")


class ConsoleStream:
    """A write()-able stream that prints through a rich console, above its live display."""

    def __init__(self, console: Console):
        self.console = console

    def write(self, text: str) -> None:
        self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def flush(self) -> None:
        pass


@contextmanager
def terminal_logging_through(console: Console):
    """Route the root logger's terminal handlers through `console`, message only; file handlers untouched."""
    terminal = [handler for handler in logging.getLogger().handlers
                if type(handler) is logging.StreamHandler and handler.stream.isatty()]
    saved = [(handler, handler.stream, handler.formatter) for handler in terminal]
    for handler in terminal:
        handler.setStream(ConsoleStream(console))
        handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        yield
    finally:
        for handler, stream, formatter in saved:
            handler.setStream(stream)
            handler.setFormatter(formatter)


def print_summary(summary: dict) -> None:
    percent = lambda value: "-" if value is None else f"{100 * value:.2f}%"
    table = Table(title=Text(f"{job_label()}dst-train {summary['status']}"), show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("setup", f"{summary['model']} / {summary['dataset']} / {summary['method']} / sparsity={summary['sparsity']:g}"),
        (f"best test acc (by {summary['best_metric']}, epoch {summary['best_epoch']})", percent(summary["best_test_acc"])),
        ("final test acc", percent(summary["final_test_acc"])),
        ("density (measured)", percent(summary["density"])),
        ("explored", percent(summary["explored"])),
        ("training FLOPs vs dense", percent(summary["train_flops_ratio"])),
        ("inference FLOPs vs dense", percent(summary["inference_flops_ratio"])),
        ("epochs", f"{summary['epochs_completed']}/{summary['epochs']} ({summary['steps']} steps)"),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    console.print(f"{job_label()}run dir: {summary['run_dir']}", soft_wrap=True, markup=False)
