"""A run dir through dst-train itself: a user's files survive a refused run, one process per dir, and a kill at
the metrics write on resume loses no row (issue 9). Subprocesses into tmp_path."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_FAILS = ("dataset=cifar10", "dataset.download=false")  # passes the config check, fails when the data loads


def dst_train(*args, cwd, script: str | None = None):
    """dst-train in a subprocess; `script` runs first in that process (a fault hook), then the CLI."""
    code = (script or "") + "\nimport sys\nfrom dst_cli.cli import main\nsys.argv[0] = 'dst-train'\nmain()\n"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def user_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    (path / "data").mkdir()
    (path / "data" / "x.csv").write_text("1,2\n")
    return path


def files(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args", [("sparsity=1.5",), BUILD_FAILS], ids=["bad value", "build fails"])
def test_a_user_folder_named_as_run_dir_survives_a_refused_run(tmp_path, tiny_overrides, args):
    folder = user_folder(tmp_path / "mine")
    before = files(folder)
    result = dst_train(*tiny_overrides, *args, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert files(folder) == before and sorted(p.name for p in folder.iterdir()) == ["data", "notes.txt"]


def test_run_dir_dot_survives_a_failed_build(tmp_path, tiny_overrides):
    folder = user_folder(tmp_path / "work")
    before = files(folder)
    result = dst_train(*tiny_overrides, *BUILD_FAILS, "hydra.run.dir=.", cwd=folder)
    assert result.returncode == 2, result.stderr
    assert "dataset cifar10: files not found" in result.stderr
    assert files(folder) == before and sorted(p.name for p in folder.iterdir()) == ["data", "notes.txt"]


def test_a_second_start_in_the_same_dir_is_refused_naming_the_holder(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "dst_cli", *tiny_overrides, "trainer.epochs=60", f"hydra.run.dir={run_dir}"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lock = run_dir / ".dst-train.lock"
        deadline = time.monotonic() + 240
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lock.read_text().startswith(f"{first.pid} on "), first.stderr
        second = dst_train(*tiny_overrides, "trainer.epochs=60", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr.strip() == (f"dst-train: error: {run_dir} is in use by another dst-train "
                                         f"(pid {first.pid} on {os.uname().nodename}); wait for it to end or use "
                                         "another hydra.run.dir")
        assert first.poll() is None  # the holder goes on, its files untouched
    finally:
        first.terminate()
        first.wait(timeout=120)
    assert first.returncode == 143
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: 1, 2, 3, ... never 1, 1, 2, 2


# Kills the process (SIGKILL, no clean-up) half way through its n-th metrics.jsonl row.
KILL_AT_ROW = textwrap.dedent("""
    import os, signal
    from dst_cli import metrics
    real_write_all, rows = metrics.write_all, [0]
    def write_all(fd, data):
        rows[0] += 1
        if rows[0] == int(os.environ["KILL_AT_ROW"]):
            real_write_all(fd, bytes(data[: len(data) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        real_write_all(fd, data)
    metrics.write_all = write_all
""")


def test_sigkill_at_the_metrics_write_on_resume_loses_no_row(tmp_path, tiny_overrides, monkeypatch):
    run_dir = tmp_path / "run"
    args = (*tiny_overrides, "trainer.epochs=3", f"hydra.run.dir={run_dir}")
    metrics = run_dir / "metrics.jsonl"
    monkeypatch.setenv("KILL_AT_ROW", "2")  # dies writing the row of epoch 2: the checkpoint covers epoch 1
    assert dst_train(*args, cwd=tmp_path, script=KILL_AT_ROW).returncode == -9
    first_row = metrics.read_bytes().split(b"\n")[0] + b"\n"
    assert metrics.read_bytes() != first_row  # a torn row 2
    monkeypatch.setenv("KILL_AT_ROW", "1")  # the resume dies writing its first row (epoch 2 again)
    assert dst_train(*args, cwd=tmp_path, script=KILL_AT_ROW).returncode == -9
    assert metrics.read_bytes().startswith(first_row)
    resumed = dst_train(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rows = metrics.read_bytes().splitlines(keepends=True)
    assert rows[0] == first_row and [json.loads(row)["epoch"] for row in rows] == [1, 2, 3]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
