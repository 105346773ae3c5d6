"""The faults of issue 18 on the runner side: each is one line (no traceback), leaves the run dir as it was,
or is repaired and said; each test failed on the code before the fix."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dst_cli import cli
from dst_cli.build import train
from dst_cli.data import cifar

from conftest import train_interrupted_after_first_epoch
from fakes import write_fake_cifar10

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=quickstart", "trainer.epochs=2", "schedule.update_interval=5", "trainer.progress=none"]


def refused(args, capsys, monkeypatch, cwd: Path) -> str:
    """dst-train in this process: exit 2 and its one stderr line."""
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_covered_metrics_row_torn_after_its_checkpoint_is_restored(make_cfg, tmp_path, monkeypatch, caplog):
    cfg = make_cfg(*TINY)
    run_dir = tmp_path / "run"
    train_interrupted_after_first_epoch(cfg, run_dir, monkeypatch)
    metrics = run_dir / "metrics.jsonl"
    row = metrics.read_bytes()
    metrics.write_bytes(row[: len(row) // 2])  # epoch 1's row torn, after the checkpoint of epoch 1 was written
    with caplog.at_level("WARNING", logger="dst_cli"):
        train(cfg, run_dir)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads(row)["test/acc"] == rows[0]["test/acc"]
    assert "the rows of epochs 1 were torn or missing; appended them again from" in caplog.text


def test_unreadable_dataset_files_are_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch):
    write_fake_cifar10(tmp_path / "data")
    real_open = open

    def no_permission(path, *args, **kwargs):
        if "data_batch_2" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(cifar, "open", no_permission, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    err = refused(["model=cnn", "dataset=cifar10", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                   "trainer.epochs=1", "hydra.run.dir=run"], capsys, monkeypatch, work)
    assert err == (f"dst-train: error: dataset cifar10: cannot read the file (Permission denied) at "
                   f"{tmp_path / 'data' / 'cifar-10-batches-py' / 'data_batch_2'}; make it readable")
    assert list(work.iterdir()) == []  # no run dir, lock or train.log left


def test_a_checkpoint_of_another_model_is_one_line_and_changes_nothing(make_cfg, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    train_interrupted_after_first_epoch(make_cfg(*TINY), run_dir, monkeypatch)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["model"]["0.weight"] = torch.zeros(3, 1, 3, 3)  # another network's first layer
    torch.save(state, checkpoint)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".dst-train.lock"}
    err = refused([*TINY, f"hydra.run.dir={run_dir}"], capsys, monkeypatch, tmp_path)
    assert f"{checkpoint} does not fit this run (RuntimeError: " in err and "size mismatch" in err
    after = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".dst-train.lock"}
    assert after.keys() == before.keys() and all(after[path] == before[path] for path in before if path.name != "train.log")


def test_a_plugin_constructor_raising_runtime_error_is_one_line(tmp_path, capsys, monkeypatch):
    err = refused([*TINY, "model._target_=tests.plugins.models.ExplodingNet", "hydra.run.dir=run"], capsys,
                  monkeypatch, tmp_path)
    assert err == ("dst-train: error: model (tests.plugins.models.ExplodingNet) failed: RuntimeError: CUDA driver "
                   "too old (simulated)")
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_lr_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    err = refused([*TINY, "optim.lr=inf", "hydra.run.dir=run"], capsys, monkeypatch, tmp_path)
    assert err == "dst-train: error: optim.lr=inf is invalid; allowed: a finite number > 0"
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_is_one_line_and_the_status_says_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", *TINY, "model._target_=tests.plugins.models.CtrlCNet", "model.steps=3",
         f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 128 + signal.SIGINT
    assert result.stderr.strip().startswith("dst-train: stopped at once by a second Ctrl-C")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_a_stop_signal_held_while_the_summary_is_written_acts_after_it(tmp_path):
    """A SIGTERM that arrives while summary.json is written (torchrun's, after another rank died) waits for it."""
    marker = tmp_path / "written"
    code = ("import os, signal, pathlib\n"
            "from dst_cli.signals import signals_held\n"
            "with signals_held():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            f"    pathlib.Path({str(marker)!r}).write_text('whole')\n"
            "print('never')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGTERM and marker.read_text() == "whole" and "never" not in result.stdout
