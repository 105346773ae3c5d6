"""The training loop in-process on a few steps of digits: determinism, resume, files."""
import json
from pathlib import Path

import pytest
import torch

from conftest import train_interrupted_after_first_epoch
from dst_cli.build import build_run, prepare, resolve_compile, train
from dst_cli.checkpoint import load_checkpoint
from dst_cli.errors import UserError

TIMING_KEYS = {"time/epoch_s"}


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def masks(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["sparse"]


def test_run_writes_metrics_summary_and_checkpoints(make_cfg, tiny_overrides, tmp_path):
    summary = train(make_cfg(*tiny_overrides), tmp_path)
    rows = metrics(tmp_path)
    assert [row["epoch"] for row in rows] == [1, 2]
    expected_keys = {"epoch", "step", "lr", "train/loss", "train/acc", "val/loss", "val/acc", "test/loss",
                     "test/acc", "mask/density", "mask/explored", "mask/turnover", "flops/train_ratio"}
    assert expected_keys <= set(rows[0])
    assert rows[1]["step"] == 2 * 19
    assert summary["status"] == "completed"
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 38
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    # 90% sparse, measured from the weights; every epoch had mask updates and explored grows
    assert rows[-1]["mask/density"] == pytest.approx(0.1, abs=2e-3)
    assert 0.1 < rows[0]["mask/explored"] < rows[1]["mask/explored"]
    assert rows[1]["mask/turnover"] > 0
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for name, mask in state["sparse"]["masks"].items():
        assert torch.all(state["model"][name][~mask] == 0)


def test_same_seed_same_result_different_seed_differs(make_cfg, tiny_overrides, tmp_path):
    train(make_cfg(*tiny_overrides), tmp_path / "a")
    train(make_cfg(*tiny_overrides), tmp_path / "b")
    train(make_cfg(*tiny_overrides, "seed=1"), tmp_path / "c")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


@pytest.mark.parametrize("acq", ["ee", "set"])
def test_one_epoch_then_resume_equals_two_epochs_straight(make_cfg, tiny_overrides, tmp_path, monkeypatch, acq):
    cfg = make_cfg(*tiny_overrides, f"acq={acq}")
    train(cfg, tmp_path / "straight")

    train_interrupted_after_first_epoch(cfg, tmp_path / "resumed", monkeypatch)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["status"] == "interrupted"
    assert [row["epoch"] for row in metrics(tmp_path / "resumed")] == [1]
    summary = train(cfg, tmp_path / "resumed")

    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "straight")
    straight, resumed = masks(tmp_path / "straight"), masks(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in ("masks", "explored", "active_steps", "epoch_start"):  # N counters: EE only
        if straight[key] is None:
            assert resumed[key] is None and acq != "ee"
            continue
        for name in straight["masks"]:
            assert torch.equal(straight[key][name], resumed[key][name]), (key, name)
    assert torch.equal(straight["generator"], resumed["generator"])


def test_resume_with_a_different_config_is_refused(make_cfg, tiny_overrides, tmp_path):
    train(make_cfg(*tiny_overrides), tmp_path)
    with pytest.raises(UserError, match=r"different config \(sparsity: 0.9 -> 0.8\)"):
        train(make_cfg(*tiny_overrides, "sparsity=0.8"), tmp_path)


def test_a_file_that_is_not_a_checkpoint_is_named(make_cfg, tiny_overrides, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="last.pt is not a readable dst-cli checkpoint"):
        train(make_cfg(*tiny_overrides), tmp_path)


@pytest.mark.parametrize("value, mode", [("true", None), ("reduce-overhead", "reduce-overhead"),
                                         ("max-autotune", "max-autotune")])
def test_trainer_compile_picks_the_torch_compile_mode(make_cfg, tiny_overrides, monkeypatch, value, mode):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: compiled.append(mode) or model)
    run = build_run(make_cfg(*tiny_overrides, f"trainer.compile={value}"))
    assert compiled == [mode] and run.forward_model is run.model


@pytest.mark.parametrize("value", ["auto", "false"])
def test_on_cpu_auto_and_false_compile_nothing_and_the_recipe_says_so(make_cfg, tiny_overrides, monkeypatch, value):
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: pytest.fail("torch.compile called"))
    run = build_run(make_cfg(*tiny_overrides, f"trainer.compile={value}"))
    assert run.recipe["trainer"]["compile"] is False


@pytest.mark.parametrize("value, device, distributed, resolved", [
    ("auto", "cuda", False, "reduce-overhead"),  # one CUDA device: CUDA graphs
    ("auto", "cuda", True, False),               # DDP: eager
    ("auto", "cpu", False, False),               # CPU: eager
    (True, "cpu", False, True), ("max-autotune", "cuda", True, "max-autotune"), (False, "cuda", False, False),
])
def test_compile_auto_resolves_by_device_and_ddp(value, device, distributed, resolved):
    assert resolve_compile(value, torch.device(device), distributed) == resolved


def test_grown_weights_get_zeroed_momentum_inside_the_loop(make_cfg, tiny_overrides, tmp_path):
    """At every update step of a real run: counts constant, grown weights and their momentum zero, and the
    inactive weights zero after every step."""
    cfg = make_cfg(*tiny_overrides, "trainer.epochs=1", "acq=rigl")
    trainer = prepare(cfg, tmp_path)
    engine, optimizer = trainer.engine, trainer.optimizer
    weights = dict(zip(engine.names, (p for n, p in trainer.model.named_parameters() if n in engine.names)))
    counts = {name: int(mask.sum()) for name, mask in engine.state_dict()["masks"].items()}
    original_update = engine.update
    seen = []

    def checked_update(step):
        before = {name: mask.clone() for name, mask in engine.state_dict()["masks"].items()}
        original_update(step)
        grown_total = 0
        for name, mask in engine.state_dict()["masks"].items():
            grown = mask & ~before[name]
            grown_total += int(grown.sum())
            assert torch.all(weights[name][grown] == 0)
            assert torch.all(optimizer.state[weights[name]]["momentum_buffer"][grown] == 0)
            assert int(mask.sum()) == counts[name]
        assert grown_total > 0  # the sparse layers (not the ones ERK keeps dense) changed
        seen.append(step)

    engine.update = checked_update
    trainer.run()
    assert seen == [5, 10, 15]
    for name, mask in engine.state_dict()["masks"].items():
        assert int(mask.sum()) == counts[name]
        assert torch.all(weights[name][~mask] == 0)


def test_summary_records_threads_versions_and_device(make_cfg, tiny_overrides, tmp_path):
    summary = train(make_cfg(*tiny_overrides, "trainer.epochs=1", "trainer.threads=1"), tmp_path)
    assert (summary["recipe"]["trainer"]["threads"], summary["versions"]["torch"]) == (1, torch.__version__)
    assert summary["device"] and torch.get_num_threads() == 1


def test_tensorboard_logger_writes_event_files(make_cfg, tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard")
    train(make_cfg(*tiny_overrides, "trainer.epochs=1", "logger=tensorboard"), tmp_path)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_a_logger_failing_mid_run_is_a_warning_and_the_run_goes_on(make_cfg, tiny_overrides, tmp_path, monkeypatch,
                                                                    caplog):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # tests.plugins importable
    cfg = make_cfg(*tiny_overrides, "+logger.broken._target_=tests.plugins.loggers.FailingLogger")
    with caplog.at_level("WARNING", logger="dst_cli"):
        summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and len(metrics(tmp_path)) == 2
    assert "logger broken failed (ConnectionError: tracking server gone); it gets nothing more" in caplog.text
