"""Owning a run dir: the one place for its paths, an OS lock, atomic writes, and removing only what this
process created.

Hydra creates the run dir (`mkdir(parents=True, exist_ok=True)` in hydra/core/utils.py run_job) before the
task function runs, so the task function cannot tell a dir it created from a user's folder, `hydra.run.dir=.`
or an earlier run: dst_cli.cli records the dir's DirOrigin before it calls run_job and hands it to the task.
(A sweep's job dirs are created by the launcher: their origin is what exists when the job starts, so nothing
of them is ever removed.) With `hydra.output_subdir: null` Hydra writes nothing into the dir;
`RunDir.write_hydra_record` writes `.hydra/` once the run is accepted, so a refused resume leaves the earlier
record untouched.
"""
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dst_cli.errors import UserError

LOCK_NAME = ".dst-train.lock"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
LOG_NAME = "train.log"
CHECKPOINTS_NAME = "checkpoints"
HYDRA_NAME = ".hydra"
# Everything dst-train may create directly inside a run dir; nothing else is ever removed.
HYDRA_CONFIG, HYDRA_SETTINGS, HYDRA_OVERRIDES = "config.yaml", "hydra.yaml", "overrides.yaml"  # in HYDRA_NAME
HYDRA_FILES = (HYDRA_CONFIG, HYDRA_SETTINGS, HYDRA_OVERRIDES)
RUN_ENTRIES = (METRICS_NAME, SUMMARY_NAME, LOG_NAME, CHECKPOINTS_NAME, HYDRA_NAME, LOCK_NAME)
TMP_SUFFIX = ".tmp"


class WriteFailed(Exception):
    """A run file could not be written (disk full, read-only, permissions); the previous version is kept."""

    def __init__(self, path: Path, error: OSError):
        reason = error.strerror or str(error) or type(error).__name__
        super().__init__(f"could not write {path}: {reason}")
        self.path = path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written; a short write without an error means the disk is full."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write `path` as a whole or not at all: temporary file, fsync, rename, fsync of the folder.

    On failure the temporary file is removed, `path` keeps its previous content, and WriteFailed names it.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(path, error) from None


@dataclass(frozen=True)
class DirOrigin:
    """What existed of a run dir before this process touched it."""

    path: Path
    new_dirs: tuple[Path, ...]  # the run dir and those of its parents that did not exist, deepest first
    entries: frozenset[str]  # names inside the run dir that existed

    @classmethod
    def now(cls, path: Path) -> "DirOrigin":
        path = Path(path).absolute()
        new_dirs = tuple(folder for folder in (path, *path.parents) if not folder.exists())
        entries = frozenset(os.listdir(path)) if path.is_dir() else frozenset()
        return cls(path, new_dirs, entries)


def unwritable_reason(path: Path) -> str | None:
    """Why `path` cannot be created or written as a folder, or None."""
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        return f"{existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def refuse_unwritable(path: Path, key: str) -> None:
    """Before Hydra's own mkdir would fail with a traceback: one line and exit status 2."""
    reason = unwritable_reason(path)
    if reason:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: said once, not once per rank
            print(f"dst-train: error: {key}={path} cannot be used ({reason}); allowed: a writable folder",
                  file=sys.stderr)
        sys.exit(2)


class RunDir:
    """A run dir: its paths, its owner (an flock on LOCK_NAME holding the pid), and what this process created."""

    def __init__(self, path: Path, origin: DirOrigin | None = None):
        self.path = Path(path).absolute()
        self.origin = origin if origin is not None else DirOrigin.now(self.path)
        self.lock_fd: int | None = None
        # the only place run-dir paths are spelled
        self.metrics = self.path / METRICS_NAME
        self.summary = self.path / SUMMARY_NAME
        self.log = self.path / LOG_NAME
        self.checkpoints = self.path / CHECKPOINTS_NAME
        self.last_checkpoint = self.checkpoints / "last.pt"
        self.best_checkpoint = self.checkpoints / "best.pt"
        self.hydra_record = self.path / HYDRA_NAME
        self.lock = self.path / LOCK_NAME

    # ----- ownership -----
    @property
    def owned(self) -> bool:
        return self.lock_fd is not None

    def claim(self) -> None:
        """Create the dir if needed and take its lock for the life of this process (the kernel drops it on any
        exit, SIGKILL included). Another holder: UserError naming its pid. Removes temporary files a kill
        left behind."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            while self.lock_fd is None:
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise UserError(f"{self.path} is in use by another dst-train (pid {holder}); "
                                    "wait for it to end or use another hydra.run.dir") from None
                if os.path.exists(self.lock) and os.stat(self.lock).st_ino == os.fstat(fd).st_ino:
                    self.lock_fd = fd
                else:  # the holder removed the lock file (discard) between our open and flock: take the new one
                    os.close(fd)
            os.ftruncate(self.lock_fd, 0)
            os.write(self.lock_fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as error:
            raise UserError(f"hydra.run.dir={self.path} cannot be used ({error.strerror or error}); "
                            "allowed: a writable folder") from None
        for path in (self.summary, self.last_checkpoint, self.best_checkpoint,
                     *(self.hydra_record / name for name in HYDRA_FILES)):
            path.with_name(path.name + TMP_SUFFIX).unlink(missing_ok=True)

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def discard(self) -> None:
        """Remove what this process created (a run refused for a bad value or a failed build), then release.

        Only RUN_ENTRIES that did not exist before, and only folders this process created and that are then
        empty; a folder that existed before (a user's folder, `.`, an earlier run) is never removed.
        """
        if not self.owned:
            return  # not ours: another process may be writing here
        for name in RUN_ENTRIES:
            path = self.path / name
            if name in self.origin.entries or name == LOCK_NAME or not os.path.lexists(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if LOCK_NAME not in self.origin.entries:
            self.lock.unlink(missing_ok=True)  # while still holding it: see claim()
        self.release()
        for folder in self.origin.new_dirs:
            try:
                folder.rmdir()
            except OSError:  # not empty (someone else's files) or gone: stop there
                break

    def check_can_start_fresh(self) -> None:
        """Starting from epoch 0 here would drop the rows of an earlier run that left no checkpoint."""
        if self.metrics.exists() and self.metrics.stat().st_size > 0:
            raise UserError(f"{self.path} holds {METRICS_NAME} of an earlier run but no {CHECKPOINTS_NAME}/last.pt "
                            "to resume from (trainer.checkpoint=false?); use another hydra.run.dir")

    def write_hydra_record(self, config: dict | DictConfig, hydra_config: DictConfig, overrides: list[str]) -> None:
        """`.hydra/config.yaml` (the recipe the run ran: the resolved config), `hydra.yaml`, `overrides.yaml`
        as Hydra writes them (hydra/core/utils.py _save_config), each atomically; called only once the run is
        accepted."""
        texts = (OmegaConf.to_yaml(config), OmegaConf.to_yaml(hydra_config), OmegaConf.to_yaml(list(overrides)))
        for name, text in zip(HYDRA_FILES, texts):
            write_atomic(self.hydra_record / name, text.encode())

    def recorded_status(self) -> str | None:
        """The status summary.json holds, or None if it cannot be read."""
        try:
            return json.loads(self.summary.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return None

    def record_refused(self, cfg: DictConfig, error: str, overrides: list[str]) -> None:
        """A sweep job that failed before training still leaves summary.json (status failed, its error and
        overrides) and its .hydra/ record, so summary.csv and report.md list it. An earlier run's files are
        never replaced; a file that cannot be written is said on stderr."""
        from hydra.core.hydra_config import HydraConfig

        from dst_cli.metrics import save_summary

        if SUMMARY_NAME in self.origin.entries:
            return
        record = {"status": "failed", "error": error, "run_dir": str(self.path), "overrides": overrides,
                  "sparsity": cfg.get("sparsity"), "seed": cfg.get("seed")}
        problem = save_summary(self.summary, record)
        if problem:
            print(f"dst-train: {problem}", file=sys.stderr)
        if not self.hydra_record.exists():
            config = OmegaConf.to_container(cfg, resolve=False)
            config.pop("hydra", None)
            try:
                self.write_hydra_record(config, HydraConfig.instance().cfg, overrides)
            except WriteFailed as failure:
                print(f"dst-train: {failure}", file=sys.stderr)

