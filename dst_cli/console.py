"""What a run shows on the terminal: a rich progress bar on a TTY, plain log lines otherwise."""
import logging
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

log = logging.getLogger("dst_cli")
PROGRESS_MODES = ("auto", "bar", "log", "none")


class EpochProgress:
    """Step bar for the current run (bar mode) plus one line per epoch (bar and log modes)."""

    def __init__(self, mode: str, total_steps: int, done_steps: int):
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() else "log"
        self.mode = mode
        self.progress = None
        if self.mode == "bar":
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("steps"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[last]}"), console=Console(),
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=done_steps, epoch="-", last="")

    @contextmanager
    def running(self):
        if self.progress is None:
            yield self
            return
        with self.progress:
            yield self

    def start_epoch(self, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, epoch=epoch)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def end_epoch(self, row: dict, epochs: int) -> None:
        line = (
            f"epoch {row['epoch']}/{epochs}  train/loss {row['train/loss']:.4f}  train/acc {row['train/acc']:.4f}  "
            f"test/acc {row['test/acc']:.4f}  density {row['mask/density']:.4f}  explored {row['mask/explored']:.4f}  "
            f"{row['time/epoch_s']:.1f}s"
        )
        if self.progress is not None:
            self.progress.update(self.task, last=f"test/acc {row['test/acc']:.4f}")
            self.progress.console.log(line)
        elif self.mode == "log":
            log.info(line)


def print_summary(summary: dict) -> None:
    percent = lambda value: "-" if value is None else f"{100 * value:.2f}%"
    table = Table(title=f"dst-train {summary['status']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("setup", f"{summary['model']} / {summary['dataset']} / acq={summary['acq']} / sparsity={summary['sparsity']:g}"),
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
    console.print(f"run dir: {summary['run_dir']}", soft_wrap=True)
