"""A tiny sweep as a user runs it (dst-train -m, then dst-report), end to end in subprocesses."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY_SWEEP = (
    "experiment=quickstart", "acq=ee,rigl", "sparsity=0.9,0.95",
    "trainer.epochs=2", "trainer.progress=none", "schedule.update_interval=5",
)
REPORT_FILES = ["summary.csv", "report.md", "acc_vs_sparsity.png", "test_acc_curves.png", "explored_curves.png"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMBER_COLUMNS = ("sparsity", "best_test_acc", "final_test_acc", "explored", "train_flops_ratio",
                  "inference_flops_ratio", "wall_time_s")
TEXT_COLUMNS = ("model", "dataset", "acq", "distribution", "schedule", "status")


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # one thread per process: tiny models gain nothing from more, and shared CPUs lose a lot
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return result


def dst_report(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # the console script installed next to this interpreter, as a user calls it
    return run([str(Path(sys.executable).with_name("dst-report")), *args], cwd)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """The 2 acq x 2 sparsity sweep, run once; tests that change it work on a copy."""
    cwd = tmp_path_factory.mktemp("sweep")
    sweep_dir = cwd / "multirun"
    run([sys.executable, "-m", "dst_cli", "-m", *TINY_SWEEP, f"hydra.sweep.dir={sweep_dir}"], cwd)
    return sweep_dir


def test_sweep_writes_the_report_and_the_csv_holds_each_runs_summary(sweep_dir):
    for name in REPORT_FILES:
        assert (sweep_dir / name).is_file(), name
    for name in REPORT_FILES[2:]:
        assert (sweep_dir / name).read_bytes().startswith(PNG_SIGNATURE), name

    rows = read_csv(sweep_dir / "summary.csv")
    assert [Path(row["run_dir"]) for row in rows] == [(sweep_dir / str(job)).resolve() for job in range(4)]
    assert [(row["acq"], row["sparsity"]) for row in rows] == [
        ("ee", "0.9"), ("ee", "0.95"), ("rigl", "0.9"), ("rigl", "0.95"),
    ]
    for row in rows:
        summary = read_summary(Path(row["run_dir"]))
        assert summary["status"] == "completed"
        for column in NUMBER_COLUMNS:
            assert float(row[column]) == summary[column], column
        for column in TEXT_COLUMNS:
            assert row[column] == summary[column], column
        assert int(row["seed"]) == summary["seed"]


def test_report_tables_show_each_runs_best_accuracy(sweep_dir):
    markdown = (sweep_dir / "report.md").read_text()
    assert "4 runs: 4 completed." in markdown
    table = markdown.split("### Best test accuracy (%)")[1].split("###")[0]
    for acq, row_name in (("ee", "ee"), ("rigl", "rigl-itop")):  # rigl on the itop schedule is RigL-ITOP
        accuracies = [
            read_summary(sweep_dir / str(job))["best_test_acc"]
            for job, row in enumerate(read_csv(sweep_dir / "summary.csv")) if row["acq"] == acq
        ]
        cells = " | ".join(f"{accuracy * 100:.2f} (1)" for accuracy in accuracies)  # one seed: no ±
        assert f"| {row_name} | {cells} |" in table.replace("**", "")


def test_dst_report_out_rebuilds_the_same_files(sweep_dir, tmp_path):
    out_dir = tmp_path / "rebuilt"
    result = dst_report(str(sweep_dir), "--out", str(out_dir), cwd=tmp_path)
    assert "Best test accuracy (%)" in result.stdout
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(REPORT_FILES)
    for name in REPORT_FILES:
        assert (out_dir / name).read_bytes() == (sweep_dir / name).read_bytes(), name


def test_dst_report_lists_a_failed_run_and_a_run_without_summary(sweep_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(sweep_dir, broken)
    summary = read_summary(broken / "0")
    summary.update(status="failed", error="RuntimeError: out of memory")
    (broken / "0" / "summary.json").write_text(json.dumps(summary))
    (broken / "3" / "summary.json").unlink()

    dst_report(str(broken), cwd=tmp_path)
    markdown = (broken / "report.md").read_text()
    assert "4 runs: 1 failed, 2 completed, 1 no summary." in markdown
    listed = markdown.split("## Runs that did not complete")[1]
    assert "| 0 | ee | 0.9 | 0 | failed | 2/2 | RuntimeError: out of memory |" in listed
    assert "| 3 | rigl | 0.95 | 0 | no summary | 2 | no summary.json" in listed
    accuracy = markdown.split("### Best test accuracy (%)")[1].split("###")[0]
    assert "| ee | – |" in accuracy  # the failed run is listed, not averaged
    statuses = [row["status"] for row in read_csv(broken / "summary.csv")]
    assert statuses == ["failed", "completed", "completed", "no summary"]


def test_a_failing_job_does_not_stop_the_sweep_and_is_reported(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", "-m", "experiment=quickstart", "optim.lr=1e30,0.05", "trainer.epochs=1",
         f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "job 0: run failed: the training loss became non-finite at step" in result.stderr
    assert "1 run(s) of the sweep did not complete" in result.stderr
    statuses = [json.loads((sweep_dir / job / "summary.json").read_text())["status"] for job in ("0", "1")]
    assert statuses == ["failed", "completed"]
    assert "failed" in (sweep_dir / "report.md").read_text()


def test_a_bad_value_in_the_third_job_runs_no_job_and_names_it(tmp_path, tiny_overrides):
    """Every job is composed and checked before the first starts: one message names the bad job, exit 2, and
    nothing is written (not even the sweep dir)."""
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", "-m", *tiny_overrides, "sparsity=0.9,0.95,1.5,0.8",
         f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "dst-train: error: 1 of 4 jobs of the sweep would fail, so none was started:"
    assert lines[1].startswith("  job 2 (") and "sparsity=1.5" in lines[1]
    assert lines[1].endswith("): sparsity=1.5 is invalid; allowed: a number in [0, 1)") and len(lines) == 2
    assert not sweep_dir.exists() and "Traceback" not in result.stderr


def test_a_job_refused_when_it_is_built_is_listed_and_the_sweep_fails(tmp_path):
    """Job 1 finds no dataset files (what no check before the start can know): it leaves a failed summary.json
    with its error and overrides, so summary.csv and report.md list both jobs, and the sweep exits 1."""
    from fakes import write_fake_cifar10

    write_fake_cifar10(tmp_path / "data")
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", "-m", "model=cnn", "dataset=cifar10", "dataset.download=false",
         f"dataset.root={tmp_path / 'data'},{tmp_path / 'missing'}", "trainer.batch_size=8", "trainer.epochs=1",
         "trainer.progress=none", "schedule.update_interval=2", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "job 1: error: dataset cifar10: files not found" in result.stderr
    assert "1 run(s) of the sweep did not complete" in result.stderr
    refused = read_summary(sweep_dir / "1")
    assert refused["status"] == "failed" and refused["error"].startswith("error: dataset cifar10: files not found")
    assert f"dataset.root={tmp_path / 'missing'}" in refused["overrides"]
    assert [row["status"] for row in read_csv(sweep_dir / "summary.csv")] == ["completed", "failed"]
    markdown = (sweep_dir / "report.md").read_text()
    assert "2 runs: 1 completed, 1 failed." in markdown
    assert "files not found" in markdown.split("## Runs that did not complete")[1]


def test_a_job_that_crashes_mid_training_is_listed_and_the_sweep_goes_on(tmp_path, tiny_overrides):
    """Job 0 raises inside its training loop (a bug, not bad input): the sweep still runs job 1, the crashed job
    keeps a failed summary.json with the error, its traceback is in its train.log, and the sweep exits 1."""
    sweep_dir = tmp_path / "sweep"
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", "-m", *tiny_overrides, "model._target_=tests.plugins.models.CrashingNet",
         "seed=0,1", "model.steps=3,1000", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(repo)},
    )
    assert result.returncode == 1, result.stderr
    assert "run crashed: RuntimeError: simulated crash in forward" in result.stderr
    assert "Traceback" not in result.stderr
    statuses = {}
    for job in sweep_dir.iterdir():
        if (job / "summary.json").exists():
            summary = read_summary(job)
            statuses.setdefault(summary["status"], []).append(summary)
    assert len(statuses["failed"]) == 2 and len(statuses["completed"]) == 2
    assert all("simulated crash" in s["error"] for s in statuses["failed"])
    crashed_logs = [job / "train.log" for job in sweep_dir.iterdir() if (job / "train.log").exists()
                    and "simulated crash" in (job / "train.log").read_text()]
    assert len(crashed_logs) == 2 and all("Traceback" in log.read_text() for log in crashed_logs)
    assert "4 runs: 2 failed, 2 completed." in (sweep_dir / "report.md").read_text()
