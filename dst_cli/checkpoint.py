"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded with weights_only."""
import os
import shutil
from pathlib import Path

import torch

from dst_cli.errors import UserError

VERSION = 1
REQUIRED_KEYS = ("version", "model", "optimizer", "sparse", "step", "epoch", "config")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file and rename, so a crash never leaves a partial `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"version": VERSION, **state}, tmp)
    os.replace(tmp, path)


def copy_checkpoint(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
    path = run_dir / "checkpoints" / "last.pt"
    return path if path.exists() else None
