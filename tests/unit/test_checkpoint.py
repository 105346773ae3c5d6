"""Checkpoints: atomic, a failed write keeps the previous one, a non-finite state is never saved."""
import errno
import os

import pytest
import torch
from torch import nn

from dst_cli import rundir
from dst_cli.checkpoint import NonFiniteState, load_checkpoint, non_finite_keys, save_checkpoint
from dst_cli.errors import UserError
from dst_cli.rundir import WriteFailed


def state(step: int, model: nn.Module | None = None) -> dict:
    model = model or nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sparse": {"masks": {}},
            "step": step, "epoch": 1, "epoch_totals": None, "wall_time_s": 0.0, "rng": {}, "metrics": [],
            "config": {}, "best": {"value": float("-inf")}}


def test_save_then_load_round_trips_and_leaves_no_tmp(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    saved = state(7)
    save_checkpoint(path, saved)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["version"] == 2
    for key, tensor in saved["model"].items():
        assert torch.equal(loaded["model"][key], tensor)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_names_the_path_keeps_the_previous_checkpoint_and_leaves_no_tmp(tmp_path, monkeypatch, error):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1))
    real_write = os.write

    def fail_half_way(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(rundir.os, "write", fail_half_way)
    with pytest.raises(WriteFailed) as failed:
        save_checkpoint(path, state(2))
    assert str(failed.value) == f"could not write {path}: {os.strerror(error)}"
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_checkpoint_with_an_infinite_batchnorm_running_var_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1))
    before = path.read_bytes()
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].running_var[1] = float("inf")
    with pytest.raises(NonFiniteState, match=r"^model\.1\.running_var not finite; kept the previous last.pt$"):
        save_checkpoint(path, state(2, model))
    assert path.read_bytes() == before


def test_non_finite_keys_finds_nan_in_optimizer_buffers_and_ignores_integer_tensors():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    optimizer.state[model.bias]["momentum_buffer"].fill_(float("nan"))
    full = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "counters": torch.tensor([2**62]), "masks": [torch.ones(2, dtype=torch.bool)], "lr": float("inf")}
    assert non_finite_keys(full) == ["optimizer.state.1.momentum_buffer"]
    assert non_finite_keys(state(1)) == []


def test_a_checkpoint_missing_a_key_is_named_with_its_file(tmp_path):
    path = tmp_path / "last.pt"
    incomplete = state(1)
    del incomplete["rng"]
    torch.save({"version": 2, **incomplete}, path)
    with pytest.raises(UserError, match=rf"^{path} is not a dst-cli checkpoint \(missing rng\)"):
        load_checkpoint(path)


def test_a_non_finite_state_says_whether_an_earlier_checkpoint_was_kept(tmp_path):
    bad = state(1)
    bad["model"]["1.running_var"] = torch.full((2,), float("inf"))
    path = tmp_path / "last.pt"
    with pytest.raises(NonFiniteState, match="no last.pt written \\(there is no earlier one\\)$"):
        save_checkpoint(path, bad)
    save_checkpoint(path, state(1))
    with pytest.raises(NonFiniteState, match="kept the previous last.pt$"):
        save_checkpoint(path, bad)
