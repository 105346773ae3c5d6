"""Where metrics go besides metrics.jsonl (`logger=tensorboard`; several at once: `logger=[a,b]`).

A logger is a `_target_` node under `logger.<name>`. Built (and its package checked) before anything is
written; `start` is called once the run dir is accepted, `log` after every epoch's metrics row, `finish` with
the summary whatever ended the run.
"""
import importlib.util
from pathlib import Path

from dst_cli.errors import UserError


def require(package: str, extra: str, logger: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise UserError(f"logger={logger} needs the {package} package: pip install 'dst-cli[{extra}]'")


class Logger:
    def start(self, run_dir: Path, recipe: dict, resumed: bool) -> None:
        pass

    def log(self, row: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass


class TensorBoard(Logger):
    """Every metrics.jsonl value as a TensorBoard scalar, in <run dir>/<log_dir> (`tensorboard --logdir`).

    log_dir: the TensorBoard folder, relative to the run dir
    """

    def __init__(self, log_dir: str = "tensorboard"):
        require("tensorboard", "tensorboard", "tensorboard")
        self.log_dir = log_dir
        self.writer = None

    def start(self, run_dir: Path, recipe: dict, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / self.log_dir))

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])

    def finish(self, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close()


LOGGERS = {"tensorboard": TensorBoard}
