"""summary.csv, and the acq x sparsity tables (mean ± std over seeds) shown in report.md and the terminal."""

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from dst_cli.report.runs import SETTING_FIELDS, Run

SUMMARY_COLUMNS = (
    "best_test_acc",
    "final_test_acc",
    "explored",
    "train_flops_ratio",
    "inference_flops_ratio",
    "wall_time_s",
)
CSV_COLUMNS = (*SETTING_FIELDS, "overrides", *SUMMARY_COLUMNS, "status", "error", "run_dir")
ACQ_ORDER = ("ee", "rigl", "set", "random", "static")
# summary.json key, table title, whether the highest value per column is shown in bold
TABLE_METRICS = (
    ("best_test_acc", "Best test accuracy (%)", True),
    ("explored", "Explored weights (%)", False),
    ("train_flops_ratio", "Training FLOPs (% of dense)", False),
)
STAT_NOTE = (
    "Cells: mean ± sample std over seeds (number of runs), completed runs only; "
    "highest accuracy per column in bold."
)


def write_summary_csv(runs: list[Run], path: Path) -> None:
    """One row per run; the numbers are summary.json's, unrounded."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(run) for run in runs)


def _csv_row(run: Run) -> dict:
    return {
        **run.setting,
        "overrides": " ".join(run.other_overrides),
        **{column: run.summary.get(column) for column in SUMMARY_COLUMNS},
        "status": run.status,
        "error": run.error,
        "run_dir": str(run.run_dir),
    }


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation; 0 for a single value
    n: int


def mean_std(values: list[float]) -> Stat:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, len(values))


def runs_to_aggregate(runs: list[Run]) -> list[Run]:
    """The completed runs; a report on a single run shows it whatever its status, if it has a summary."""
    if len(runs) == 1 and runs[0].summary:
        return runs
    return [run for run in runs if run.status == "completed"]


@dataclass
class Setup:
    """Runs that differ only in acq, sparsity and seed: one table section and one plot panel."""

    title: str
    runs: list[Run] = field(default_factory=list)

    @property
    def acqs(self) -> list[str]:
        return sorted({acq_label(run) for run in self.runs}, key=_acq_order)

    @property
    def sparsities(self) -> list[float]:
        return sorted({run.setting["sparsity"] for run in self.runs})

    def runs_of(self, acq: str, sparsity: float) -> list[Run]:
        return [run for run in self.runs if acq_label(run) == acq and run.setting["sparsity"] == sparsity]


def group_setups(runs: list[Run]) -> list[Setup]:
    setups: dict[str, Setup] = {}
    for run in runs:
        title = setup_title(run)
        setups.setdefault(title, Setup(title)).runs.append(run)
    return list(setups.values())


def setup_title(run: Run) -> str:
    """model / dataset, then everything else that is fixed within the setup."""
    setting = run.setting
    details = [f"distribution={setting['distribution']}", f"schedule={setting['schedule']}"]
    details += [override for override in run.other_overrides if not override.startswith("acq.")]
    return f"{setting['model']} / {setting['dataset']} ({', '.join(details)})"


def acq_label(run: Run) -> str:
    """The acq name, with its own overrides (acq.c=0.5) when a sweep varies them."""
    acq_overrides = [override for override in run.other_overrides if override.startswith("acq.")]
    acq = str(run.setting["acq"])
    return f"{acq} ({', '.join(acq_overrides)})" if acq_overrides else acq


def _acq_order(label: str) -> tuple[int, str]:
    name = label.split(" ")[0]
    return (ACQ_ORDER.index(name) if name in ACQ_ORDER else len(ACQ_ORDER), label)


def summary_stat(runs: list[Run], key: str) -> Stat | None:
    values = [run.summary[key] for run in runs if run.summary.get(key) is not None]
    return mean_std(values) if values else None


def epoch_stats(runs: list[Run], metric_key: str) -> dict[int, Stat]:
    """A metrics.jsonl value per epoch, over the runs that logged it, in epoch order."""
    values_by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.metrics:
            if row.get(metric_key) is not None:
                values_by_epoch.setdefault(row["epoch"], []).append(row[metric_key])
    return {epoch: mean_std(values_by_epoch[epoch]) for epoch in sorted(values_by_epoch)}


def sparsity_text(sparsity: float) -> str:
    return f"{sparsity * 100:g}%"


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of cells shown in bold


def setup_tables(setup: Setup) -> list[Table]:
    return [metric_table(setup, key, title, bold_highest) for key, title, bold_highest in TABLE_METRICS]


def metric_table(setup: Setup, summary_key: str, title: str, bold_highest: bool) -> Table:
    """acq rows x sparsity columns of one summary.json value, in percent."""
    stats = {
        (acq, sparsity): summary_stat(setup.runs_of(acq, sparsity), summary_key)
        for acq in setup.acqs
        for sparsity in setup.sparsities
    }
    rows = [
        [acq, *(_stat_text(stats[acq, sparsity]) for sparsity in setup.sparsities)] for acq in setup.acqs
    ]
    bold = _highest_cells(stats, setup.acqs, setup.sparsities) if bold_highest else set()
    return Table(title, ["acq", *map(sparsity_text, setup.sparsities)], rows, bold)


def _stat_text(stat: Stat | None) -> str:
    return "–" if stat is None else f"{stat.mean * 100:.2f} ± {stat.std * 100:.2f} ({stat.n})"


def _highest_cells(stats: dict, acqs: list[str], sparsities: list[float]) -> set[tuple[int, int]]:
    """Cells holding the highest mean of their column (all of them on a tie)."""
    bold = set()
    for column, sparsity in enumerate(sparsities, start=1):
        column_stats = {row: stats[acq, sparsity] for row, acq in enumerate(acqs)}
        means = {row: stat.mean for row, stat in column_stats.items() if stat is not None}
        if means:
            best = max(means.values())
            bold.update((row, column) for row, mean in means.items() if mean == best)
    return bold


def incomplete_runs_table(runs: list[Run], report_dir: Path) -> Table:
    """Runs that did not complete, with why; run dirs inside report_dir are shown relative to it."""
    incomplete = [run for run in runs if run.status != "completed"]
    rows = [
        [
            _shown_path(run.run_dir, report_dir),
            *(str(run.setting[key]) for key in ("acq", "sparsity", "seed")),
            run.status,
            _epochs_text(run),
            run.error or "",
        ]
        for run in incomplete
    ]
    header = ["run", "acq", "sparsity", "seed", "status", "epochs", "error"]
    return Table("Runs that did not complete", header, rows)


def _shown_path(path: Path, base: Path) -> str:
    base = base.resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _epochs_text(run: Run) -> str:
    done = run.summary.get("epochs_completed", len(run.metrics))
    planned = run.summary.get("epochs")
    return f"{done}/{planned}" if planned is not None else str(done)
