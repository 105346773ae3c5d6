"""The training loop in-process on a few steps of digits: determinism, resume, files."""
import json

import pytest
import torch

from dst_cli.build import build_run
from dst_cli.checkpoint import load_checkpoint
from dst_cli.errors import UserError
from dst_cli.train import Trainer, train

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

    original_save = Trainer.save

    def save_then_stop(self, row):
        original_save(self, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["status"] == "interrupted"
    assert [row["epoch"] for row in metrics(tmp_path / "resumed")] == [1]
    monkeypatch.setattr(Trainer, "save", original_save)
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


def test_without_trainer_compile_nothing_is_compiled(make_cfg, tiny_overrides, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: pytest.fail("torch.compile called"))
    build_run(make_cfg(*tiny_overrides))


def test_grown_weights_get_zeroed_momentum_inside_the_loop(make_cfg, tiny_overrides, tmp_path):
    """At every update step of a real run: counts constant, grown weights and their momentum zero, and the
    inactive weights zero after every step."""
    cfg = make_cfg(*tiny_overrides, "trainer.epochs=1", "acq=rigl")
    run = build_run(cfg)
    engine, optimizer = run.engine, run.optimizer
    weights = dict(zip(engine.names, (p for n, p in run.model.named_parameters() if n in engine.names)))
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
    Trainer(cfg, run, tmp_path).run()
    assert seen == [5, 10, 15]
    for name, mask in engine.state_dict()["masks"].items():
        assert int(mask.sum()) == counts[name]
        assert torch.all(weights[name][~mask] == 0)


def test_summary_records_threads_torch_and_device(make_cfg, tiny_overrides, tmp_path):
    summary = train(make_cfg(*tiny_overrides, "trainer.epochs=1", "trainer.threads=1"), tmp_path)
    assert (summary["threads"], summary["torch"]) == (1, torch.__version__)
    assert summary["device"] and torch.get_num_threads() == 1


def test_tensorboard_logger_writes_event_files(make_cfg, tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard")
    train(make_cfg(*tiny_overrides, "trainer.epochs=1", "logger=tensorboard"), tmp_path)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
