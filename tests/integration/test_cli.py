"""dst-train as a user runs it: subprocesses into tmp_path."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dst_cli.sparse import acquisition_names

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def dst_train(*args, cwd):
    # the repo root on the path, as a user's own package would be: tests.plugins.* are importable
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "dst_cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_quickstart_reaches_90_percent_at_90_percent_sparsity(tmp_path):
    result = dst_train("experiment=quickstart", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["best_test_acc"] >= 0.90
    assert summary["density"] == pytest.approx(0.10, abs=2e-3)
    assert summary["sparsity"] == 0.9 and summary["acq"] == "ee"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 30
    assert {"last.pt", "best.pt"} <= {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "dst-train completed" in result.stdout


def test_sweep_over_the_other_acquisition_functions(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = dst_train("-m", "experiment=quickstart", "acq=rigl,set,random,static", "trainer.epochs=2",
                       "schedule.update_interval=5", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summaries = [json.loads((sweep_dir / str(job) / "summary.json").read_text()) for job in range(4)]
    assert [s["acq"] for s in summaries] == ["rigl", "set", "random", "static"]
    assert all(s["status"] == "completed" for s in summaries)
    static = summaries[3]
    assert static["explored"] == pytest.approx(static["density"], abs=2e-3)  # static never explores
    assert all(s["explored"] > 1.5 * s["density"] for s in summaries[:3])
    with open(sweep_dir / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4
    assert (sweep_dir / "report.md").exists()


@pytest.mark.parametrize("args, message", [
    (["acq=foo"], f"acq=foo is not an option; allowed: {', '.join(sorted(acquisition_names()))}"),
    (["sparsity=1.5"], "sparsity=1.5 is invalid; allowed: a number in [0, 1)"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["trainer.batch_size=-2"], "trainer.batch_size=-2 is invalid"),
    (["schedule.update_interval=0"], "schedule.update_interval=0 is invalid"),
    (["dataset=cifar10", "dataset.download=false"], "dataset cifar10: files not found"),
    # a value of issue 8 that ran to the end, one that ended in a traceback (all of them: tests/unit/test_config.py)
    (["trainer.bf16=maybe"], "trainer.bf16=maybe is invalid; allowed: auto | true | false"),
    (["model.width=x"], "model.width=x is invalid; allowed: a number"),
    (["model._target_=tests.plugins.models.Conv1dNet", "model.channels=0"],
     "model (tests.plugins.models.Conv1dNet): channels must be >= 1, got 0"),
])
def test_bad_input_is_one_line_nonzero_exit_and_no_run_dir(tmp_path, args, message):
    result = dst_train("experiment=quickstart", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_a_run_dir_with_a_broken_checkpoint_is_named_and_kept(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"\x00garbage")
    result = dst_train("experiment=quickstart", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert "last.pt is not a readable dst-cli checkpoint" in result.stderr
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == b"\x00garbage"


def completed_summary(*args, cwd) -> dict:
    """summary.json of the one run a successful dst-train made under cwd."""
    result = dst_train(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "outputs" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    return summary


def test_own_conv1d_model_by_target_trains_and_counts_its_flops(tmp_path):
    summary = completed_summary("experiment=quickstart", "model._target_=tests.plugins.models.Conv1dNet",
                                "trainer.epochs=3", "trainer.progress=none", cwd=tmp_path)
    assert summary["model"] == "Conv1dNet"
    assert list(summary["layers"]) == ["conv1.weight", "conv2.weight", "head.weight"]
    assert summary["layers"]["conv1.weight"]["shape"] == [32, 1, 3]
    assert summary["density"] == pytest.approx(0.10, abs=2e-3)
    assert 0 < summary["inference_flops_ratio"] < summary["train_flops_ratio"] < 0.2
    assert summary["best_test_acc"] > 0.5  # it learns (chance: 0.1)


def test_own_acquisition_class_by_target_with_its_option(tmp_path):
    summary = completed_summary("experiment=quickstart", "acq._target_=tests.plugins.acq.MyAcq", "acq.alpha=0.3",
                                "trainer.epochs=2", "trainer.progress=none", "schedule.update_interval=5", cwd=tmp_path)
    assert summary["acq"] == "MyAcq"
    assert summary["density"] == pytest.approx(0.10, abs=2e-3)
    assert summary["explored"] > 1.5 * summary["density"]  # its updates moved weights


def test_own_dataset_callable_by_target(tmp_path):
    summary = completed_summary("experiment=quickstart", "dataset._target_=tests.plugins.data.make_data",
                                "dataset.size=256", "model=mlp", "trainer.epochs=2", "trainer.progress=none", cwd=tmp_path)
    assert summary["dataset"] == "make_data"
    assert summary["steps"] == 2 * (256 // 64)
    assert summary["best_metric"] == "val/acc"  # the callable returned (train, val, test)
    assert summary["layers"]["1.weight"]["shape"] == [256, 16]  # input_shape (16,) inferred from the data
    assert summary["layers"]["5.weight"]["shape"] == [3, 128]  # num_classes 3 inferred from the labels
