"""Several processes: torchrun with gloo on CPU, and Hydra's joblib launcher."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from dst_cli.checkpoint import load_checkpoint

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


def child_pids(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as file:
            children += [int(child) for child in file.read().split()]
    return children


def metrics_without_time(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in rows]


def test_sigterm_to_both_ranks_then_resume_gives_the_uninterrupted_metrics(tmp_path):
    """9 steps per epoch; the ranks act on a stop at multiples of 20 steps, i.e. mid-epoch (step 20 or 40): the
    checkpoint holds both ranks' running sums, so the resumed epoch's train/loss and train/acc are exact."""
    args = ("-m", "dst_cli", "experiment=quickstart", "trainer.epochs=6", "schedule.update_interval=5",
            "trainer.progress=log")
    straight = torchrun(*args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_dir = tmp_path / "stopped"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
               f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if re.search(r"\s1/6\s", line):  # the epoch line of epoch 1
            for rank in child_pids(process.pid):  # the ranks, not torchrun (its agent would kill them)
                os.kill(rank, signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait(timeout=120) == 1  # torchrun's own status whatever its workers' (dst_cli/distributed.py)
    assert re.search(r"exitcode\s*:\s*143", output), output[-3000:]  # each rank: 128 + SIGTERM
    assert output.count("stopped by SIGTERM at step") == 1, output[-3000:]  # said once, by rank 0
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] in (20, 40) and state["epoch_totals"]["per_rank"].shape == (2, 4)

    resumed = torchrun(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics_without_time(run_dir) == metrics_without_time(tmp_path / "straight")


# Each rank seeds its engine differently (a user's bug the engine must catch): its random masks differ, and
# the first mask update (step 2, after the second optimizer step) finds it on every rank.
DIVERGE = textwrap.dedent("""
    import torch
    from torch import nn
    from dst_cli import distributed
    from dst_cli.sparse import MasksDiverged, sparsify
    context = distributed.start(torch.device("cpu"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=10, acq="set", seed=context.rank,
                      schedule="itop", update_interval=2, distribution="uniform")
    try:
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            engine.step()
        print("rank", context.rank, "agreed")
    except MasksDiverged as error:
        print("rank", context.rank, "caught:", error)
    distributed.stop(context)
""")


def test_a_diverged_mask_is_caught_on_every_rank(tmp_path):
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGE)
    result = torchrun(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # uniform keeps the first layer dense (RigL's convention), so only the second one differs
    message = "the ranks' masks differ after the mask update at step 2 (layers: 1.weight)"
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
