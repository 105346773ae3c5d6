"""Several processes: torchrun with gloo on CPU, and Hydra's joblib launcher."""
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


def torchrun(*args, cwd):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_two_ranks_keep_identical_masks_through_random_updates(tmp_path):
    run_dir = tmp_path / "run"
    result = torchrun("-m", "dst_cli", "experiment=quickstart", "acq=random", "trainer.epochs=2",
                      "schedule.update_interval=3", "trainer.progress=log", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    # 1258 digits / (64 x 2 ranks) = 9 steps per epoch; updates at steps 3, 6, 9, 12, 15 (not at the last step)
    assert (summary["world_size"], summary["effective_batch_size"], summary["steps"]) == (2, 128, 18)
    assert summary["mask_checks"] == 5  # every update compared the masks of both ranks, and they agreed
    assert summary["density"] == pytest.approx(0.1, abs=2e-3)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # written once, by rank 0


DIVERGE = textwrap.dedent("""
    import torch
    from dst_cli import distributed
    context = distributed.start(torch.device("cpu"))
    masks = [torch.ones(4, 4, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)]
    if context.rank == 1:
        masks[0][2, 3] = False
    try:
        distributed.verify_masks_agree(masks, ["a.weight", "b.weight"], step=100, context=context)
        print("rank", context.rank, "agreed")
    except distributed.MasksDiverged as error:
        print("rank", context.rank, "caught:", error)
    distributed.stop(context)
""")


def test_a_diverged_mask_is_caught_on_every_rank(tmp_path):
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGE)
    result = torchrun(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    message = "the ranks' masks differ after the mask update at step 100 (layers: a.weight)"
    assert result.stdout.count(message) == 2, result.stdout


def test_torchrun_needs_a_shared_run_dir(tmp_path):
    result = torchrun("-m", "dst_cli", "experiment=quickstart", cwd=tmp_path)
    assert result.returncode != 0
    assert "hydra.run.dir=outputs/runs/NAME" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="the launchers extra is not installed")
def test_joblib_sweep_with_two_workers(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "dst_cli", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "experiment=quickstart", "acq=ee,set", "trainer.epochs=1", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads((sweep_dir / str(job) / "summary.json").read_text()) for job in (0, 1)]
    assert [s["acq"] for s in summaries] == ["ee", "set"]
    assert all(s["status"] == "completed" for s in summaries)
    assert (sweep_dir / "summary.csv").exists()
