"""Stopping and failing cleanly: SIGTERM mid-epoch + resume, non-finite loss, interrupted writes."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from dst_cli import checkpoint
from dst_cli.checkpoint import NonFiniteState, load_checkpoint
from dst_cli.build import train
from dst_cli.train import NonFiniteLoss, Trainer

pytestmark = pytest.mark.slow
RUN = ("experiment=quickstart", "trainer.epochs=4", "schedule.update_interval=7", "trainer.progress=log")


def dst_train_process(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "dst_cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def metrics_without_time(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in rows]


def test_sigterm_mid_epoch_then_restart_equals_an_uninterrupted_run(tmp_path):
    straight = dst_train_process(*RUN, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    run_dir = tmp_path / "stopped"
    process = dst_train_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    for line in process.stdout:
        if re.search(r"\s1/4\s", line):  # the epoch line of epoch 1 (columns: epoch, loss, ...)
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at step" in output
    assert f"checkpoint saved to {run_dir / 'checkpoints' / 'last.pt'}; to resume: dst-train " in output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    steps_per_epoch = 19
    assert state["step"] % steps_per_epoch != 0 and state["epoch_totals"] is not None  # stopped mid-epoch

    resumed = dst_train_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert metrics_without_time(run_dir) == metrics_without_time(tmp_path / "straight")
    a = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    for name, mask in b["sparse"]["masks"].items():
        assert torch.equal(a["sparse"]["masks"][name], mask)
        assert torch.equal(a["model"][name], b["model"][name])


def poison_at_epoch_two(monkeypatch, poison) -> None:
    """Trainer.train_epoch calls poison(model) at the start of epoch 2."""
    original_epoch = Trainer.train_epoch

    def train_epoch(self, epoch, progress, stop):
        if epoch == 2:
            with torch.no_grad():
                poison(self.model)
        original_epoch(self, epoch, progress, stop)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


@pytest.mark.parametrize(("poison", "error", "message"), [
    (lambda model: next(model.parameters()).fill_(float("nan")), NonFiniteLoss, "non-finite at step 20"),
    # the loss stays finite, but BatchNorm's running_var becomes inf: never written as the last good state
    (lambda model: next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(
        float("inf")), NonFiniteState, "running_var not finite; kept the previous last.pt"),
], ids=["loss", "batchnorm buffer"])
def test_a_non_finite_run_fails_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path, monkeypatch, poison, error,
                                                                   message):
    poison_at_epoch_two(monkeypatch, poison)
    with pytest.raises(error, match=message):
        train(make_cfg("experiment=quickstart", "trainer.epochs=3", "trainer.progress=none"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and error.__name__ in summary["error"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no .tmp


def test_sigterm_without_checkpoints_says_so_and_the_rerun_keeps_the_metrics(tmp_path):
    run_dir = tmp_path / "run"
    args = (*RUN, "trainer.checkpoint=false", f"hydra.run.dir={run_dir}")
    process = dst_train_process(*args, cwd=tmp_path)
    for line in process.stdout:
        if re.search(r"\s1/4\s", line):
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert "no checkpoint was written (trainer.checkpoint=false), so this run cannot be resumed" in output
    assert "checkpoint saved" not in output and not (run_dir / "checkpoints").exists()
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    assert metrics

    rerun = dst_train_process(*args, cwd=tmp_path)
    output = rerun.stdout.read()
    assert rerun.wait(timeout=300) == 2
    assert "holds metrics.jsonl of an earlier run but no checkpoints/last.pt to resume from" in output
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics


def test_non_finite_loss_on_the_command_line(tmp_path):
    process = dst_train_process("experiment=quickstart", "optim.lr=1e30", "trainer.epochs=2",
                                f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    output = process.stdout.read()
    assert process.wait(timeout=120) == 1
    assert "run failed: the training loss became non-finite at step" in output
    assert "Traceback" not in output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"model": {}, "optimizer": {}, "sparse": {}, "step": 1, "epoch": 1, "config": {}})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception, match="last.pt is not a readable dst-cli checkpoint"):
        load_checkpoint(path)
