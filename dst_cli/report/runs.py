"""Find and read the run directories that dst-train writes, alone or inside sweep directories.

Reading never raises on a run's own files: a file that is missing, not UTF-8, not valid JSON/YAML or of the
wrong shape becomes a `problem` of the run ("summary.json: not valid JSON (...)"), listed by the report.
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from dst_cli.errors import UserError
from dst_cli.schema import flattened
from dst_cli.rundir import HYDRA_CONFIG, HYDRA_NAME, HYDRA_OVERRIDES, HYDRA_SETTINGS, METRICS_NAME, SUMMARY_NAME

# What identifies a run in summary.csv and the list of runs that did not complete.
SETTING_FIELDS = ("model", "dataset", "acq", "sparsity", "seed", "distribution", "schedule", "init")
# summary.json numbers the report reads (summary.csv shows them unrounded)
SUMMARY_NUMBERS = (
    "best_test_acc",
    "final_test_acc",
    "explored",
    "train_flops_ratio",
    "inference_flops_ratio",
    "wall_time_s",
)
NO_SUMMARY = "no summary"
UNREADABLE = "unreadable"  # summary.json exists but cannot be read


class FileProblem(Exception):
    """A run's file cannot be used; the message says why."""


@dataclass(frozen=True)
class Run:
    run_dir: Path
    summary: dict  # summary.json as written; {} when missing or unreadable
    config: dict  # .hydra/config.yaml flattened to dotted keys ({} when missing or unreadable)
    setting: dict  # SETTING_FIELDS -> value (None when unknown)
    other_overrides: tuple[str, ...]  # Hydra overrides that set something outside SETTING_FIELDS
    metrics: list[dict]  # metrics.jsonl rows, one per epoch
    status: str  # completed | failed | interrupted | no summary | unreadable
    error: str | None
    problems: tuple[str, ...]  # "file: reason" for each file that could not be read (fully)
    comparable: bool  # summary and config readable and the setting well-formed: may enter the tables


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
    try:
        children = [child for child in path.iterdir() if child.is_dir() and not child.name.startswith(".")]
    except OSError as error:
        raise UserError(f"cannot list {path}: {error.strerror or error}") from None
    return [run_dir for child in sorted(children, key=_natural_order) for run_dir in find_run_dirs(child)]


def is_run_dir(path: Path) -> bool:
    return (path / SUMMARY_NAME).is_file() or (path / HYDRA_NAME).is_dir()


def _natural_order(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def load_run(run_dir: Path) -> Run:
    problems: list[str] = []

    def attempt(read, *args, default):
        try:
            return read(*args)
        except FileProblem as problem:
            problems.append(str(problem))
            return default

    summary_path = run_dir / SUMMARY_NAME
    summary = attempt(_read_summary, summary_path, default=None) if summary_path.is_file() else {}
    config_path = run_dir / HYDRA_NAME / HYDRA_CONFIG
    config = attempt(_read_config, config_path, default=None) if config_path.is_file() else {}
    hydra_choices = attempt(_read_hydra_choices, run_dir / HYDRA_NAME / HYDRA_SETTINGS, default={})
    overrides = attempt(_read_overrides, run_dir, summary or {}, default={})
    metrics = attempt(_read_metrics, run_dir / METRICS_NAME, problems, default=[])

    setting = {
        field: _first_known(
            (summary or {}).get(field),
            hydra_choices.get(field),
            (config or {}).get(field),
            (config or {}).get(f"{field}.name"),
            overrides[field].value() if field in overrides else None,
        )
        for field in SETTING_FIELDS
    }
    if summary is None:
        status, error = UNREADABLE, problems[0]
    elif not summary:
        status, error = NO_SUMMARY, "no summary.json (the run died hard, or is still running)"
    else:
        status, error = summary["status"], summary.get("error")
    setting_ok = _is_number(setting["sparsity"]) and isinstance(setting["seed"], int)
    if status == "completed" and not setting_ok:
        problems.append(f"setting: sparsity={setting['sparsity']} and seed={setting['seed']} are not numbers")
    return Run(
        run_dir=run_dir,
        summary=summary or {},
        config=config or {},
        setting=setting,
        other_overrides=tuple(override.input_line for key, override in overrides.items() if key not in SETTING_FIELDS),
        metrics=metrics,
        status=status,
        error=error,
        problems=tuple(problems),
        comparable=summary is not None and config is not None and setting_ok,
    )


def _first_known(*values):
    return next((value for value in values if value is not None), None)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileProblem(f"{_shown(path)}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise FileProblem(f"{_shown(path)}: cannot be read ({error.strerror or error})") from None


def _shown(path: Path) -> str:
    """summary.json, .hydra/config.yaml: the path inside the run dir."""
    return f"{path.parent.name}/{path.name}" if path.parent.name == HYDRA_NAME else path.name


def _read_summary(path: Path) -> dict:
    try:
        summary = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise FileProblem(f"summary.json: not valid JSON ({error})") from None
    if not isinstance(summary, dict):
        raise FileProblem(f"summary.json: holds a {type(summary).__name__}, not a JSON object")
    if not isinstance(summary.get("status"), str):
        raise FileProblem("summary.json: no status")
    for key in SUMMARY_NUMBERS:
        if summary.get(key) is not None and not _is_number(summary[key]):
            raise FileProblem(f"summary.json: {key}={summary[key]!r} is not a number")
    layers = summary.get("layers", {})
    if not isinstance(layers, dict) or not all(_is_layer(layer) for layer in layers.values()):
        raise FileProblem("summary.json: layers is not a mapping of layer name -> {density, target_density}")
    return summary


def _is_layer(layer) -> bool:
    return isinstance(layer, dict) and all(_is_number(layer.get(key)) for key in ("density", "target_density"))


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(_read_text(path))
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise FileProblem(f"{_shown(path)}: not valid YAML ({reason})") from None


def _read_config(path: Path) -> dict:
    config = _read_yaml(path)
    if not isinstance(config, dict):
        raise FileProblem(f"{_shown(path)}: holds a {type(config).__name__}, not a mapping")
    return flattened(config)


def _read_hydra_choices(path: Path) -> dict:
    """The group choices (model: cnn, acq: ee) of hydra.yaml."""
    if not path.is_file():
        return {}
    hydra_config = _read_yaml(path)
    choices = _dig(hydra_config, "hydra", "runtime", "choices")
    if not isinstance(choices, dict):
        raise FileProblem(f"{_shown(path)}: no hydra.runtime.choices mapping")
    return choices


def _dig(tree, *keys):
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _read_overrides(run_dir: Path, summary: dict) -> dict[str, Override]:
    """The run's Hydra overrides by key (summary.json's copy first: a run refused early may have no .hydra/)."""
    path = run_dir / HYDRA_NAME / HYDRA_OVERRIDES
    lines = summary.get("overrides")
    if lines is None:
        lines = _read_yaml(path) if path.is_file() else []
        where = _shown(path)
    else:
        where = "summary.json: overrides"
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise FileProblem(f"{where}: not a list of overrides")
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except HydraException as error:
        raise FileProblem(f"{where}: {' '.join(str(error).split())}") from None
    return {override.key_or_group: override for override in parsed}


def _read_metrics(path: Path, problems: list[str]) -> list[dict]:
    """The epoch rows of metrics.jsonl; a torn last line or a malformed line is left out and named."""
    if not path.is_file():
        return []
    lines = _read_text(path).split("\n")
    rows, bad = [], []
    for number, line in enumerate(lines, start=1):
        row = _json_or_none(line)
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
        elif line.strip():
            bad.append(number)
    torn = bad and bad[-1] == len(lines)  # every whole row ends in a newline; a kill mid-append leaves a part
    if torn:
        problems.append("metrics.jsonl: last line torn (a kill mid-write?), left out")
        bad.pop()
    if bad:
        problems.append(f"metrics.jsonl: line {', '.join(map(str, bad))} not an epoch row, left out")
    return rows


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None
