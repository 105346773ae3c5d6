"""A run records the recipe it actually ran, fully resolved, and that recipe alone rebuilds the same run;
methods and a user's own group options are chosen by name on the command line."""
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dst_cli.build import train
from dst_cli.checkpoint import load_checkpoint
from dst_cli.cli import main
from dst_cli.sparse import UpdateSchedule

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=quickstart", "trainer.epochs=2", "schedule.update_interval=5", "trainer.progress=none"]


def run_main(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0


def test_the_recorded_recipe_is_resolved_and_rebuilds_the_same_run(tmp_path):
    run_dir = tmp_path / "run"
    run_main([*TINY, f"hydra.run.dir={run_dir}"])
    recorded = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["recipe"] == OmegaConf.to_container(recorded)
    # every schedule field, by value; null only where it is the value (no gradual pruning)
    schedule_fields = {f.name for f in fields(UpdateSchedule)} - {"total_steps"}
    assert set(recorded.schedule) - {"_target_"} == schedule_fields
    assert [key for key, value in recorded.schedule.items() if value is None] == ["initial_density"]
    assert (recorded.schedule.rounding, recorded.schedule.update_after_optimizer_step) == ("ceil", True)
    # what `auto` and null stood for
    assert (recorded.dense_first_layer, recorded.dense_last_layer) == (False, False)
    assert recorded.trainer.device == "cpu" and isinstance(recorded.trainer.threads, int)
    assert (recorded.trainer.bf16, recorded.trainer.channels_last) == (False, False)
    assert recorded.optim._target_ == "torch.optim.SGD" and recorded.optim.dampening == 0  # every argument
    assert summary["method"] == "ee" and summary["schedule"] == "itop" and summary["total_steps"] == 38
    assert set(summary["versions"]) == {"dst_cli", "torch", "python", "git_commit"}
    assert summary["versions"]["torch"] == torch.__version__

    again = train(recorded, tmp_path / "again")  # the recipe alone, no composition
    assert again["status"] == "completed" and again["recipe"] == summary["recipe"]
    first, second = (load_checkpoint(path / "checkpoints" / "last.pt")["sparse"] for path in (run_dir, tmp_path / "again"))
    assert all(torch.equal(first["masks"][name], second["masks"][name]) for name in first["masks"])
    rows = [[json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
            for path in (run_dir, tmp_path / "again")]
    assert [row["test/acc"] for row in rows[0]] == [row["test/acc"] for row in rows[1]]


def test_a_method_sweep_needs_no_plus_and_names_each_row(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "dst_cli", "-m", *TINY, "method=ee,rigl,set,granet",
                             f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summaries = [json.loads((sweep_dir / str(job) / "summary.json").read_text()) for job in range(4)]
    assert [(s["method"], s["acq"], s["schedule"]) for s in summaries] == [
        ("ee", "ee", "itop"), ("rigl", "rigl", "rigl"), ("set", "set", "itop"), ("granet", "rigl", "gradual")]


@pytest.mark.parametrize("alpha", [[], ["+acq.alpha=0.3"]])
def test_a_users_own_acquisition_is_a_config_group_option(tmp_path, alpha):
    """tests/plugins/conf/acq/my_acq.yaml (only its _target_), found through hydra.searchpath: acq=my_acq,
    labelled my_acq; the recipe holds its argument whether given or taken by default."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", *TINY, "hydra.searchpath=[pkg://tests.plugins.conf]", "acq=my_acq",
         *alpha, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""})
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["acq"], summary["method"]) == ("my_acq", "my_acq")
    assert summary["recipe"]["acq"] == {"_target_": "tests.plugins.acq.MyAcq", "alpha": 0.3 if alpha else 0.5}
