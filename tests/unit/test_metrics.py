"""metrics.jsonl is append-only: resume truncates, never rewrites; kills and full disks lose no finished row."""
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from dst_cli import metrics, rundir
from dst_cli.errors import UserError
from dst_cli.metrics import MetricsLog, save_summary
from dst_cli.rundir import WriteFailed


def row(epoch: int) -> dict:
    return {"epoch": epoch, "train/loss": 1.0 / epoch, "test/acc": 0.1 * epoch}


def lines(*epochs: int) -> bytes:
    return b"".join((json.dumps(row(e)) + "\n").encode() for e in epochs)


def test_rows_are_appended_whole_and_read_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, keep_epochs=0)
    log.append(row(1))
    log.append(row(2))
    log.close()
    assert path.read_bytes() == lines(1, 2)
    assert MetricsLog(path, keep_epochs=2).rows == [row(1), row(2)]


@pytest.mark.parametrize("tail", [b"", b'{"epoch": 4, "train/lo', b'{"epoch": 4, "train/loss": \n'])
def test_resume_truncates_rows_past_the_checkpoint_and_a_torn_tail_in_place(tmp_path, tail):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(lines(1, 2, 3) + tail)
    inode = path.stat().st_ino
    log = MetricsLog(path, keep_epochs=2)
    assert log.rows == [row(1), row(2)]
    assert path.read_bytes() == lines(1, 2) and path.stat().st_ino == inode
    log.append(row(3))
    assert path.read_bytes() == lines(1, 2, 3)


def test_a_torn_last_line_is_dropped_without_rewriting_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(lines(1, 2, 3) + b'{"epoch": 4, "tra')
    inode = path.stat().st_ino
    assert MetricsLog(path, keep_epochs=3).rows == [row(1), row(2), row(3)]
    assert path.read_bytes() == lines(1, 2, 3) and path.stat().st_ino == inode


def test_a_bad_line_in_the_middle_is_named_not_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    content = lines(1) + b"garbage\n" + lines(2)
    path.write_bytes(content)
    with pytest.raises(UserError, match="metrics.jsonl line 2 is not a metrics row"):
        MetricsLog(path, keep_epochs=2)
    assert path.read_bytes() == content


def test_a_full_disk_during_an_append_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, keep_epochs=0)
    log.append(row(1))
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "write", half_then_full)
    with pytest.raises(WriteFailed, match=f"could not write {path}: No space left on device"):
        log.append(row(2))
    assert path.read_bytes() == lines(1) and log.rows == [row(1)]


# Resumes from a checkpoint of epoch KEEP and appends the rows of the later epochs: what the trainer does.
RESUME = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from dst_cli.metrics import MetricsLog
    keep, last = int(sys.argv[2]), int(sys.argv[3])
    log = MetricsLog(Path(sys.argv[1]), keep_epochs=keep)
    for epoch in range(keep + 1, last + 1):
        log.append({"epoch": epoch, "train/loss": 1.0 / epoch, "test/acc": 0.1 * epoch})
""")
# The same, but the process dies by SIGKILL half way through writing the first row.
TORN_RESUME = textwrap.dedent("""
    import os, signal
    from dst_cli import rundir
    real_write = os.write
    def write_half_then_die(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)
    rundir.os.write = write_half_then_die
""") + RESUME


def resume(path, keep: int, last: int, script: str = RESUME, prefix: tuple = ()) -> int:
    command = [*prefix, sys.executable, "-c", script, str(path), str(keep), str(last)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc writes: every write() is a metrics write
    return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode


def test_sigkill_in_the_middle_of_a_row_on_resume_loses_no_finished_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(lines(1, 2, 3))  # the checkpoint covers epoch 2; row 3 was written before a kill
    assert resume(path, 2, 5, TORN_RESUME) == -9
    assert path.read_bytes().startswith(lines(1, 2)) and path.read_bytes() != lines(1, 2)  # a torn row 3
    assert resume(path, 2, 5) == 0
    assert path.read_bytes() == lines(1, 2, 3, 4, 5)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
# resuming at epoch 2 over rows 1-3 then reaching epoch 5: 1 ftruncate, 1 + 3 fsyncs, 3 writes
@pytest.mark.parametrize(("syscall", "when"), [("ftruncate", 1), ("fsync", 1), ("write", 1), ("fsync", 2),
                                               ("write", 3), ("fsync", 4)])
def test_sigkill_injected_at_a_metrics_syscall_on_resume_loses_no_row(tmp_path, syscall, when):
    """strace kills the resuming process at its n-th write/ftruncate/fsync, before the call runs."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(lines(1, 2, 3))
    strace = ("strace", "-qq", "-o", os.devnull, "-e", f"trace={syscall}",
              "-e", f"inject={syscall}:signal=KILL:when={when}")
    assert resume(path, 2, 5, prefix=strace) == -9
    data = path.read_bytes()
    assert data.startswith(lines(1, 2))  # every row the checkpoint covers is still there
    assert resume(path, 2, 5) == 0
    assert path.read_bytes() == lines(1, 2, 3, 4, 5)


def test_save_summary_falls_back_to_overwriting_in_place(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text('{"status": "running"}')

    def full_disk(path, obj):
        raise WriteFailed(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(metrics, "write_json", full_disk)
    assert save_summary(path, {"status": "failed"}) is None
    assert json.loads(path.read_text()) == {"status": "failed"}


def test_save_summary_that_cannot_write_at_all_returns_one_line(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    real_open = os.open

    def read_only(file, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(file, flags, *args)

    monkeypatch.setattr(rundir.os, "open", read_only)
    monkeypatch.setattr(type(path), "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "ro")))
    assert save_summary(path, {"status": "failed"}) == f"could not write {path}: Read-only file system"
    assert list(tmp_path.iterdir()) == []
