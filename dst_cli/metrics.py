"""Run files: metrics.jsonl (one JSON object per epoch) and summary.json (written atomically)."""
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from dst_cli.errors import UserError


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


class MetricsLog:
    """Appends one line per epoch; on resume drops lines of epochs the checkpoint does not cover."""

    def __init__(self, path: Path, keep_epochs: int):
        self.path = path
        self.rows = [row for row in self._read() if row["epoch"] <= keep_epochs]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def open_tensorboard(run_dir: Path, cfg: Mapping):
    """A SummaryWriter into <run_dir>/<cfg.log_dir> for `logger=tensorboard`, else None."""
    if cfg["name"] != "tensorboard":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("logger=tensorboard needs the tensorboard package: pip install 'dst-cli[tensorboard]'")
    return SummaryWriter(log_dir=str(run_dir / cfg["log_dir"]))
