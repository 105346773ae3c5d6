"""Find and read the run directories that dst-train writes, alone or inside sweep directories."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from dst_cli.errors import UserError

# What identifies a run in the tables; every other override is shown as one "overrides" column.
SETTING_FIELDS = ("model", "dataset", "acq", "sparsity", "seed", "distribution", "schedule")
NO_SUMMARY = "no summary"


@dataclass(frozen=True)
class Run:
    run_dir: Path
    summary: dict  # summary.json as written; {} when the run died before writing it
    setting: dict  # SETTING_FIELDS -> value (None when unknown)
    other_overrides: tuple[str, ...]  # Hydra overrides that set something outside SETTING_FIELDS
    metrics: list[dict]  # metrics.jsonl rows, one per epoch
    status: str  # completed | failed | interrupted | no summary
    error: str | None


def collect_runs(paths: list[Path]) -> list[Run]:
    """Every run under the given run dirs and sweep dirs, each once, in path order."""
    run_dirs: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist")
        found = find_run_dirs(path)
        if not found:
            raise UserError(f"{path} holds no runs (no directory with summary.json or .hydra/ below it)")
        run_dirs.update((run_dir.resolve(), None) for run_dir in found)
    return [load_run(run_dir) for run_dir in run_dirs]


def find_run_dirs(path: Path) -> list[Path]:
    """path itself if it is a run dir, else the run dirs below it, jobs in numeric order (2 before 10)."""
    if is_run_dir(path):
        return [path]
    if not path.is_dir():
        return []
    children = [child for child in path.iterdir() if child.is_dir() and not child.name.startswith(".")]
    return [run_dir for child in sorted(children, key=_natural_order) for run_dir in find_run_dirs(child)]


def is_run_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / ".hydra").is_dir()


def _natural_order(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def load_run(run_dir: Path) -> Run:
    summary, problem = _read_summary(run_dir)
    overrides = summary.get("overrides") or _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    overrides_by_key = {
        override.key_or_group: override for override in OverridesParser.create().parse_overrides(overrides)
    }
    hydra_setting = _setting_from_hydra_files(run_dir)
    setting = {
        field: summary[field] if summary.get(field) is not None else hydra_setting.get(field)
        for field in SETTING_FIELDS
    }
    other_overrides = tuple(
        override.input_line for key, override in overrides_by_key.items() if key not in SETTING_FIELDS
    )
    return Run(
        run_dir=run_dir,
        summary=summary,
        setting=setting,
        other_overrides=other_overrides,
        metrics=_read_metrics(run_dir / "metrics.jsonl"),
        status=summary.get("status", NO_SUMMARY),
        error=summary.get("error") or problem,
    )


def _read_summary(run_dir: Path) -> tuple[dict, str | None]:
    """summary.json and, when it is missing or unreadable, a line saying so."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}, "no summary.json (the run died hard, or is still running)"
    try:
        return json.loads(path.read_text()), None
    except json.JSONDecodeError as error:
        return {}, f"summary.json is not valid JSON ({error})"


def _setting_from_hydra_files(run_dir: Path) -> dict:
    """The setting of a run without summary.json: group choices from hydra.yaml, scalars from config.yaml."""
    hydra_config = _read_yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    choices = hydra_config.get("hydra", {}).get("runtime", {}).get("choices", {})
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    scalars = {key: value for key, value in config.items() if not isinstance(value, (dict, list))}
    return {**scalars, **choices}


def _read_yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line
    return rows
