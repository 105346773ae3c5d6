"""Run files: metrics.jsonl (one JSON object per epoch, append-only) and summary.json (atomic)."""
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from dst_cli.errors import UserError
from dst_cli.rundir import WriteFailed, fsync_dir, write_all, write_atomic


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def save_summary(path: Path, summary: dict) -> str | None:
    """Write summary.json if at all possible; return None, or the one-line reason it could not be written.

    On a full disk the atomic write needs room for a second copy; overwriting the old file in place frees its
    blocks first, so the run's status still gets recorded (a kill during that write can tear it, which
    dst-report lists as unreadable: better than no status at all).
    """
    try:
        write_json(path, summary)
        return None
    except WriteFailed as atomic_failure:
        try:
            path.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
            return None
        except OSError:
            return str(atomic_failure)


def read_rows(path: Path, keep_epochs: int) -> tuple[list[dict], list[int]]:
    """The rows of epochs <= keep_epochs and the byte offset where each of them ends.

    A last line that is torn (no newline, or not a JSON object) ends the valid rows; a bad line followed by
    more lines is not a crash artefact, so it is an error rather than silently dropped.
    """
    data = path.read_bytes() if path.exists() else b""
    *lines, tail = data.split(b"\n")  # tail: the bytes after the last newline (a torn line, or b"")
    rows, ends, end = [], [], 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                    raise ValueError("not an object with an integer 'epoch'")
            except ValueError:
                if number == len(lines) and not tail:
                    break  # the last line: torn by a crash
                raise UserError(f"{path} line {number} is not a metrics row; fix or remove that line") from None
            if row["epoch"] > keep_epochs:
                break
            rows.append(row)
            ends.append(end + len(line) + 1)
        end += len(line) + 1
    return rows, ends


class MetricsLog:
    """metrics.jsonl, only ever appended to and, on resume, truncated: never rewritten.

    Each row is one os.write of the whole line (O_APPEND), then fsync: the row of epoch e is on disk before
    the checkpoint of epoch e is renamed into place. On resume, rows past the checkpoint's epoch and a torn
    last line are cut off with ftruncate at the end of the last kept row (same inode, earlier bytes untouched).
    The checkpoint carries the rows it covers (`covered`): a covered row the file lost (torn or cut after the
    checkpoint was written) is appended again from it, from the first row the file does not hold on, and
    `restored` names those epochs.
    """

    def __init__(self, path: Path, keep_epochs: int, covered: list[dict] | None = None):
        self.path = path
        rows, ends = read_rows(path, keep_epochs)
        kept = len(rows)
        if covered is not None:
            kept = next((i for i, (row, good) in enumerate(zip(rows, covered)) if row["epoch"] != good["epoch"]),
                        min(len(rows), len(covered)))
        self.rows = rows[:kept]
        missing = (covered or [])[kept:]
        self.restored = [row["epoch"] for row in missing]
        try:
            created = not path.exists()
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if created:
                fsync_dir(path.parent)
            end = ends[kept - 1] if kept else 0
            if os.fstat(self.fd).st_size > end:
                os.ftruncate(self.fd, end)
                os.fsync(self.fd)
        except OSError as error:
            raise WriteFailed(path, error) from None
        for row in missing:
            self.append(row)

    def append(self, row: dict) -> None:
        """Append one row; on failure (disk full) cut back to the previous end so no torn line stays."""
        line = (json.dumps(row) + "\n").encode()
        end = os.fstat(self.fd).st_size
        try:
            write_all(self.fd, line)
            os.fsync(self.fd)
        except OSError as error:
            try:
                os.ftruncate(self.fd, end)
            except OSError:
                pass  # resume drops a torn last line anyway
            raise WriteFailed(self.path, error) from None
        self.rows.append(row)

    def close(self) -> None:
        os.close(self.fd)


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
