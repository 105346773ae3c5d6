"""Which runs are compared with which, and statistics over distinct seeds.

A section holds the runs whose resolved configs (.hydra/config.yaml) are equal once the result-neutral keys
(dst_cli.config.RESULT_NEUTRAL_KEYS: progress display, device, data location, ...) and the keys of a table
cell are set aside: the method (acq.*, schedule.*, init.*), sparsity and seed. Within a section a run's row
is its method as the papers' tables name it (dst_cli.methods.method_label; "dense" for sparsity 0) and its column its
sparsity; a cell's figure is the mean ± sample std
over its distinct seeds. Runs that repeat a seed in one cell count once: the mean of the repeats stands for
that seed, and the report warns.
"""

import json
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dst_cli.methods import DEFAULT_INIT, DENSE, ROW_ORDER, STATIC, method_label
from dst_cli.report.runs import Run
from dst_cli.schema import RESULT_NEUTRAL_KEYS

METHOD_GROUPS = ("acq", "schedule", "init")  # config groups that make up a method (a table row)
CELL_KEYS = ("sparsity", "seed", *METHOD_GROUPS)
TITLE_KEYS = ("distribution", "trainer.epochs")  # always in a section title
NAME_KEYS = ("model.name", "model._target_", "dataset.name", "dataset._target_")  # shown as model / dataset


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation; 0 for a single value
    n: int  # number of distinct seeds


def mean_std(values: list[float]) -> Stat:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, len(values))


def seed_stat(runs: list[Run], value_of: Callable[[Run], float | None]) -> Stat | None:
    """Mean ± std over the distinct seeds of runs; the repeats of one seed are averaged first."""
    values_by_seed: dict[int, list[float]] = {}
    for run in runs:
        value = value_of(run)
        if value is not None:
            values_by_seed.setdefault(run.setting["seed"], []).append(value)
    if not values_by_seed:
        return None
    return mean_std([statistics.fmean(values) for values in values_by_seed.values()])


@dataclass
class Section:
    title: str
    runs: list[Run]
    rows: dict[Path, str]  # run dir -> method row
    methods: list[str]  # rows in display order, dense first
    sparsities: list[float]  # columns: the sparsities of the sparse runs

    def runs_of(self, method: str, sparsity: float) -> list[Run]:
        """The runs of one cell; the dense runs belong to every column."""
        return [
            run for run in self.runs
            if self.rows[run.run_dir] == method and (method == DENSE or run.setting["sparsity"] == sparsity)
        ]

    def stat(self, method: str, sparsity: float, summary_key: str) -> Stat | None:
        return seed_stat(self.runs_of(method, sparsity), lambda run: run.summary.get(summary_key))

    def epoch_stats(self, method: str, sparsity: float, metric_key: str) -> dict[int, Stat]:
        """A metrics.jsonl value per epoch over the cell's seeds, in epoch order."""
        runs = self.runs_of(method, sparsity)
        values = [{row["epoch"]: row.get(metric_key) for row in run.metrics} for run in runs]
        epochs = sorted({epoch for by_epoch in values for epoch, value in by_epoch.items() if value is not None})
        by_run = dict(zip((run.run_dir for run in runs), values))
        return {epoch: seed_stat(runs, lambda run: by_run[run.run_dir].get(epoch)) for epoch in epochs}

    def seed_counts(self, method: str) -> list[int]:
        """The number of distinct seeds of each of the method's cells that has runs."""
        counts = {len({run.setting["seed"] for run in self.runs_of(method, sparsity)}) for sparsity in self.sparsities}
        return sorted(counts - {0})

    def repeated_seeds(self) -> list[str]:
        """One warning per cell and seed that more than one run holds."""
        warnings = []
        cells = [(DENSE, None)] if DENSE in self.methods else []
        cells += [(method, sparsity) for method in self.methods if method != DENSE for sparsity in self.sparsities]
        for method, sparsity in cells:
            runs_by_seed: dict[int, list[Run]] = {}
            for run in self.runs_of(method, sparsity):
                runs_by_seed.setdefault(run.setting["seed"], []).append(run)
            for seed, runs in runs_by_seed.items():
                if len(runs) > 1:
                    where = method if sparsity is None else f"{method} at {sparsity_text(sparsity)}"
                    dirs = ", ".join(run.run_dir.name for run in runs)
                    warnings.append(
                        f"{self.title}: {where}: seed {seed} is repeated by {len(runs)} runs ({dirs}); "
                        "counted as one seed, the mean of its runs"
                    )
        return warnings


def sparsity_text(sparsity: float) -> str:
    return f"{sparsity * 100:g}%"


def group_sections(runs: list[Run]) -> list[Section]:
    """Sections in the order of their first run; rows and columns sorted."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(section_key(run), []).append(run)
    varying = _varying_keys([dict(key) for key in by_key])
    sections = []
    for key, section_runs in by_key.items():
        rows = method_rows(section_runs)
        sparse = [run.setting["sparsity"] for run in section_runs if rows[run.run_dir] != DENSE]
        sections.append(
            Section(
                title=section_title(section_runs, {name: dict(key)[name] for name in varying if name in dict(key)}),
                runs=section_runs,
                rows=rows,
                methods=sorted(set(rows.values()), key=lambda method: _method_order(method, section_runs, rows)),
                sparsities=sorted(set(sparse)) or [0.0],
            )
        )
    return sections


def grouping_config(run: Run) -> dict:
    """The resolved config; for a run without .hydra/config.yaml, its setting and overrides."""
    if run.config:
        return run.config
    overrides = dict(override.split("=", 1) for override in run.other_overrides if "=" in override)
    return {**run.setting, **{key.lstrip("+~"): value for key, value in overrides.items()}}


def is_under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def section_key(run: Run) -> tuple:
    config = grouping_config(run)
    return tuple(
        sorted(
            (key, _comparable(value))
            for key, value in config.items()
            if not is_under(key, RESULT_NEUTRAL_KEYS) and not is_under(key, CELL_KEYS)
        )
    )


def _varying_keys(configs: list[dict]) -> list[str]:
    """Keys whose value is not the same in every config (missing counts as a value)."""
    keys = sorted({key for config in configs for key in config})
    return [key for key in keys if len({_comparable(config.get(key, "<unset>")) for config in configs}) > 1]


def _comparable(value) -> str:
    """Config values (lists included) as hashable text."""
    return json.dumps(value, sort_keys=True, default=str)


def section_title(runs: list[Run], distinguishing: dict[str, str]) -> str:
    """model / dataset, the run length and distribution, what the section's runs share of the method,
    and the keys that tell this section from the others."""
    first = runs[0]
    config = grouping_config(first)
    details = [f"distribution={first.setting['distribution']}"]
    if config.get("trainer.epochs") is not None:
        details.append(f"{config['trainer.epochs']} epochs")
    sparse = [run for run in runs if run.setting["sparsity"] != 0]
    for group in ("schedule", "init"):
        names = {run.setting[group] for run in sparse}
        if len(names) == 1 and None not in names:
            details.append(f"{group}={names.pop()}")
    details += [
        f"{key}={json.loads(value)}" for key, value in distinguishing.items() if key not in (*TITLE_KEYS, *NAME_KEYS)
    ]
    return f"{first.setting['model']} / {first.setting['dataset']} ({', '.join(details)})"


def method_rows(runs: list[Run]) -> dict[Path, str]:
    """The row name of every run of a section: "dense" for sparsity 0, else its method as the papers name it
    (dst_cli.methods.method_label), plus the options that differ among the runs of that method ("ee
    (acq.c=0.5)"; what a method sets itself, such as DSR's schedule.regrow_dropped, is the same in all of its
    runs and not shown). Two different (acq, schedule, init) that would get one name (a custom acq called
    like an init) are both named in full ("snip-itop", "static-itop (init=snip)"), so that no row mixes two
    methods."""
    sparse = [run for run in runs if run.setting["sparsity"] != 0]
    methods = {run.run_dir: tuple(run.setting[group] for group in METHOD_GROUPS) for run in sparse}
    names = {method: method_label(*method, sparsity=None) for method in set(methods.values())}
    shared = {name for name, count in Counter(names.values()).items() if count > 1}
    base_names = {}
    init_options = {}
    for run in sparse:
        acq, schedule, init = methods[run.run_dir]
        in_full = names[acq, schedule, init] in shared
        base_names[run.run_dir] = f"{acq}-{schedule}" if in_full else names[acq, schedule, init]
        init_in_name = acq == STATIC and not in_full
        init_options[run.run_dir] = [f"init={init}"] if init not in (None, DEFAULT_INIT) and not init_in_name else []
    rows = {run.run_dir: DENSE for run in runs if run.setting["sparsity"] == 0}
    for run in sparse:
        same_method = [other for other in sparse if base_names[other.run_dir] == base_names[run.run_dir]]
        qualifiers = [*init_options[run.run_dir], *_differing_options(run, same_method)]
        name = base_names[run.run_dir]
        rows[run.run_dir] = f"{name} ({', '.join(qualifiers)})" if qualifiers else name
    return rows


def _differing_options(run: Run, runs: list[Run]) -> list[str]:
    """acq.c=0.5: the run's acq / schedule / init options that differ among runs (those of its method)."""
    qualifiers = []
    for group in METHOD_GROUPS:
        configs = [_options(grouping_config(other), group) for other in runs]
        options = _options(grouping_config(run), group)
        qualifiers += [f"{key}={options.get(key)}" for key in _varying_keys(configs)]
    return qualifiers


def _options(config: dict, group: str) -> dict:
    return {
        key: value for key, value in config.items()
        if key.startswith(group + ".") and key not in (f"{group}.name", f"{group}._target_")
    }


def _method_order(method: str, runs: list[Run], rows: dict[Path, str]) -> tuple:
    """ROW_ORDER's position of the row's name without options, else its acq's, just after it."""
    base = method.split(" (")[0]
    if base in ROW_ORDER:
        return (ROW_ORDER.index(base), 0, method)
    acq = next(run.setting["acq"] for run in runs if rows[run.run_dir] == method)
    return (ROW_ORDER.index(acq) if acq in ROW_ORDER else len(ROW_ORDER), 1, method)
