"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded with weights_only."""
import io
from collections.abc import Iterator
from pathlib import Path

import torch

from dst_cli.errors import UserError
from dst_cli.rundir import RunDir, write_atomic

VERSION = 2  # 2: the config is the resolved recipe (dst_cli.build.resolved_recipe); the metrics rows
REQUIRED_KEYS = ("version", "model", "optimizer", "sparse", "step", "epoch", "epoch_totals", "best", "wall_time_s",
                 "rng", "metrics", "config")


class NonFiniteState(Exception):
    """The state to checkpoint holds inf/NaN (weights, BatchNorm statistics, optimizer buffers)."""


def floating_tensors(state, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted key, tensor) for every floating-point tensor nested in dicts, lists and tuples."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from floating_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from floating_tensors(value, f"{prefix}.{index}" if prefix else str(index))


def non_finite_keys(state: dict) -> list[str]:
    """Keys of the tensors holding inf or NaN; empty when the whole state is finite (one sync per device)."""
    keys_by_device: dict[torch.device, list[str]] = {}
    flags_by_device: dict[torch.device, list[torch.Tensor]] = {}
    for key, tensor in floating_tensors(state):
        keys_by_device.setdefault(tensor.device, []).append(key)
        flags_by_device.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    bad = []
    for device, flags in flags_by_device.items():
        finite = torch.stack(flags).tolist()
        bad += [key for key, ok in zip(keys_by_device[device], finite) if not ok]
    return bad


def check_finite(state: dict, path: Path) -> None:
    """NonFiniteState naming the first bad tensor if `state` (to be written to `path`) holds inf or NaN."""
    bad = non_finite_keys(state)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        kept = f"kept the previous {path.name}" if path.exists() else f"no {path.name} written (there is no earlier one)"
        raise NonFiniteState(f"{bad[0]}{more} not finite; {kept}")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `path` whole or not at all; the previous file stays on any failure.

    Refuses a non-finite state (NonFiniteState), so last.pt is always a state training can go on from.
    A full disk or read-only folder raises WriteFailed naming `path`, with no temporary file left. The state
    is serialised in memory first, because torch.save reports a failed file write as an opaque RuntimeError.
    """
    check_finite(state, path)
    buffer = io.BytesIO()
    torch.save({"version": VERSION, **state}, buffer)
    write_atomic(path, buffer.getbuffer())


def copy_checkpoint(src: Path, dst: Path) -> None:
    write_atomic(dst, src.read_bytes())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a readable dst-cli checkpoint ({reason}); delete it or use another run dir")
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"{path} is not a dst-cli checkpoint (missing {', '.join(missing)}); delete it or use another run dir")
    if state["version"] != VERSION:
        raise UserError(f"{path} has checkpoint version {state['version']}; this dst-cli reads version {VERSION}")
    return state


def last_checkpoint(run_dir: Path) -> Path | None:
    path = RunDir(run_dir).last_checkpoint
    return path if path.exists() else None
