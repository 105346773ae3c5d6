"""dst-train as a user runs it: subprocesses into tmp_path."""
import csv
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def dst_train(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
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
    (["acq=foo"], "acq=foo is not an option; allowed: ee, random, rigl, set, static"),
    (["sparsity=1.5"], "sparsity=1.5 is invalid; allowed: a number in [0, 1)"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["trainer.batch_size=-2"], "trainer.batch_size=-2 is invalid"),
    (["schedule.update_interval=0"], "schedule.update_interval=0 is invalid"),
    (["dataset=cifar10", "dataset.download=false"], "dataset cifar10: files not found"),
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
