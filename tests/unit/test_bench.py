"""scripts/bench.py on a tiny model: the JSON it writes and the arithmetic of its figures."""
import importlib.util
import json
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


def test_bench_writes_one_row_per_method_with_positive_times(bench, tmp_path):
    out = tmp_path / "bench.json"
    returned = bench.main([*TINY, "--out", str(out)])
    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))
    assert report["settings"]["update_interval"] == 4 and report["settings"]["device"] == "cpu"
    assert {"torch", "cpu", "threads"} <= set(report["machine"])
    rows = {row["method"]: row for row in report["results"]}
    assert list(rows) == ["dense", "ee", "rigl", "set", "random"]
    dense = rows.pop("dense")
    assert dense["update_ms"] is None
    assert dense["step_ratio"] == dense["ratio"] == 1.0
    assert dense["amortised_ms"] == dense["step_ms"] > 0
    for row in rows.values():
        assert row["step_ms"] > 0 and row["update_ms"] > 0
        assert row["amortised_ms"] == pytest.approx(row["step_ms"] + row["update_ms"] / 4)
        paired = sorted(s / d for s, d in zip(row["block_step_ms"], dense["block_step_ms"]))
        assert row["step_ratio"] == pytest.approx(sum(paired) / 2)  # the median of the 2 blocks' ratios
        assert row["ratio"] == pytest.approx(row["step_ratio"] + row["update_ms"] / 4 / dense["step_ms"])
    for row in report["results"]:
        assert len(row["block_step_ms"]) == 2
        if report["memory_measure"] is not None:  # Linux or CUDA
            assert row["peak_memory_mb"] > 0


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
