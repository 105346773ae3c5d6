"""scripts/bench.py on a tiny model: the JSON it writes and the arithmetic of its figures."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from dst_cli.errors import UserError

BENCH_PATH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
# One thread: a tiny model's steps are quick that way even on a busy machine.
TINY = ["--model", "mlp", "--input-shape", "1", "8", "8", "--batch-size", "8", "--device", "cpu", "--threads", "1",
        "--warmup", "1", "--blocks", "2", "--block-steps", "2", "--update-interval", "4"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # --threads sets it for the whole test process


@pytest.fixture(scope="module")
def default_run(bench, tmp_path_factory):
    """One run of the tiny benchmark without --out, from a fresh working directory: (report, that directory)."""
    workdir = tmp_path_factory.mktemp("bench_run")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        yield bench.main(TINY), workdir
    finally:
        os.chdir(previous)


def test_bench_writes_its_default_json_under_outputs_and_nothing_else(default_run, capsys):
    returned, workdir = default_run
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == [
        "outputs", "outputs/bench", "outputs/bench/bench.json"]
    report = json.loads((workdir / "outputs" / "bench" / "bench.json").read_text())
    assert report == json.loads(json.dumps(returned))
    assert report["settings"]["update_interval"] == 4 and report["settings"]["device"] == "cpu"
    assert {"torch", "cpu", "threads"} <= set(report["machine"])


def test_times_and_ratios_follow_from_the_blocks(default_run):
    rows = {row["method"]: row for row in default_run[0]["results"]}
    assert list(rows) == ["dense", "ee", "rigl", "set", "random"]
    dense = rows.pop("dense")
    assert dense["update_ms"] is None and dense["apply_ms"] is None
    assert dense["step_ratio"] == dense["ratio"] == 1.0
    assert dense["amortised_ms"] == dense["step_ms"] > 0
    for row in rows.values():
        assert row["step_ms"] > 0 and row["update_ms"] > 0 and row["apply_ms"] > 0
        assert row["amortised_ms"] == pytest.approx(row["step_ms"] + row["update_ms"] / 4)
        paired = sorted(s / d for s, d in zip(row["block_step_ms"], dense["block_step_ms"]))
        assert row["step_ratio"] == pytest.approx(sum(paired) / 2)  # the median of the 2 blocks' ratios
        assert row["ratio"] == pytest.approx(row["step_ratio"] + row["update_ms"] / 4 / dense["step_ms"])
    for row in default_run[0]["results"]:
        assert len(row["block_step_ms"]) == 2


def test_memory_columns(default_run):
    report = default_run[0]
    rows = {row["method"]: row for row in report["results"]}
    # The MLP's prunable layers hold multiples of 8 weights: a uint8 mask (1 byte) + explored and epoch-start
    # bits (1/8 + 1/8); EE alone keeps int32 N counters (+4).
    assert rows["dense"]["state_bytes_per_weight"] is None
    assert rows["ee"]["state_bytes_per_weight"] == 1.25 + 4
    for method in ("rigl", "set", "random"):
        assert rows[method]["state_bytes_per_weight"] == 1.25
    if report["memory_measure"] is None:  # neither Linux nor CUDA
        return
    assert rows["dense"]["peak_memory_vs_dense_mb"] == 0.0
    for row in rows.values():
        assert row["peak_memory_mb"] > 0
        assert row["peak_memory_vs_dense_mb"] == pytest.approx(row["peak_memory_mb"] - rows["dense"]["peak_memory_mb"])


def test_out_must_be_a_writable_file_path(bench, tmp_path):
    with pytest.raises(UserError, match=f"--out={tmp_path} is a directory"):
        bench.main([*TINY, "--out", str(tmp_path)])
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    with pytest.raises(UserError, match="cannot be written"):
        bench.main([*TINY, "--out", str(blocker / "bench.json")])
    assert blocker.read_text() == "kept" and sorted(tmp_path.iterdir()) == [blocker]


@pytest.mark.parametrize(
    "flag, value", [("--update-interval", "1"), ("--sparsity", "1.0"), ("--blocks", "0"), ("--threads", "0")]
)
def test_bad_arguments_are_user_errors(bench, flag, value):
    with pytest.raises(UserError, match=f"{flag}={value}"):
        bench.main([*TINY, flag, value])


def test_help_documents_the_options(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--model", "--width", "--input-shape", "--sparsity", "--update-interval", "--compile", "--out"):
        assert option in help_text
