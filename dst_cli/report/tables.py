"""summary.csv, and the tables shown in report.md and the terminal."""

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dst_cli.report.runs import SETTING_FIELDS, SUMMARY_NUMBERS, Run
from dst_cli.report.sections import DENSE, Section, Stat, sparsity_text

CSV_COLUMNS = (*SETTING_FIELDS, "overrides", *SUMMARY_NUMBERS, "status", "error", "run_dir")
STAT_NOTE = (
    "Accuracy and explored cells: mean ± sample std over distinct seeds (number of seeds; one seed: no ±); "
    "a seed run more than once counts once, as the mean of its runs. Completed runs only. Highest accuracy "
    "per sparsity in bold (dense aside). FLOPs relative to dense training / inference (1.000× = dense), "
    "mean over seeds."
)


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of cells shown in bold


def summary_csv(runs: list[Run]) -> str:
    """One row per run; the numbers are summary.json's, unrounded."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(_csv_row(run) for run in runs)
    return text.getvalue()


def _csv_row(run: Run) -> dict:
    return {
        **run.setting,
        "overrides": " ".join(run.other_overrides),
        **{column: run.summary.get(column) for column in SUMMARY_NUMBERS},
        "status": run.status,
        "error": run.error,
        "run_dir": str(run.run_dir),
    }


def runs_to_compare(runs: list[Run]) -> list[Run]:
    """The completed runs that can be placed in a table; a report on one run shows it whatever its status."""
    if len(runs) == 1 and runs[0].summary and runs[0].comparable:
        return runs
    return [run for run in runs if run.status == "completed" and run.comparable]


def section_tables(section: Section) -> list[Table]:
    """The papers' tables, a row per method and a column per sparsity: best test accuracy, training and
    inference FLOPs relative to dense (two tables, so that each fits 80 columns), and the explored share."""
    sparse_methods = [method for method in section.methods if method != DENSE]
    return [
        method_table(section, "Best test accuracy (%)", section.methods, percent_cell("best_test_acc"), bold=True),
        method_table(section, "FLOPs relative to dense: training / inference", section.methods, flops_cell),
        *([method_table(section, "Explored weights (%)", sparse_methods, percent_cell("explored"))]
          if sparse_methods else []),
    ]


def method_table(
    section: Section, title: str, methods: list[str], cell: Callable[[Section, str, float], tuple], bold: bool = False
) -> Table:
    """A row per method, a column per sparsity; cell() gives (text, mean or None) of one method and sparsity.
    With bold, the highest mean of each column among the sparse methods is bold (all of them on a tie)."""
    cells = [[cell(section, method, sparsity) for sparsity in section.sparsities] for method in methods]
    rows = [[method, *(text for text, _ in row)] for method, row in zip(methods, cells)]
    highlighted = set()
    for column in range(len(section.sparsities)) if bold else ():
        means = {row: cells[row][column][1] for row, method in enumerate(methods) if method != DENSE}
        known = [mean for mean in means.values() if mean is not None]
        highlighted |= {(row, column + 1) for row, mean in means.items() if known and mean == max(known)}
    return Table(title, ["method", *map(sparsity_text, section.sparsities)], rows, highlighted)


def percent_cell(summary_key: str) -> Callable[[Section, str, float], tuple]:
    def cell(section: Section, method: str, sparsity: float) -> tuple:
        stat = section.stat(method, sparsity, summary_key)
        return percent_text(stat), stat.mean if stat else None

    return cell


def flops_cell(section: Section, method: str, sparsity: float) -> tuple:
    train, inference = (section.stat(method, sparsity, key) for key in ("train_flops_ratio", "inference_flops_ratio"))
    return f"{ratio_text(train)} / {ratio_text(inference)}", None


def percent_text(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    if stat.n == 1:
        return f"{stat.mean * 100:.2f} (1)"
    return f"{stat.mean * 100:.2f} ± {stat.std * 100:.2f} ({stat.n})"


def ratio_text(stat: Stat | None) -> str:
    return "–" if stat is None else f"{stat.mean:.3f}×"


def incomplete_runs_table(runs: list[Run], report_dir: Path) -> Table:
    """Runs that did not complete, with why; run dirs inside report_dir are shown relative to it."""
    rows = [
        [
            shown_path(run.run_dir, report_dir),
            *(str(run.setting[key]) for key in ("acq", "sparsity", "seed")),
            run.status,
            _epochs_text(run),
            run.error or "",
        ]
        for run in runs
        if run.status != "completed"
    ]
    header = ["run", "acq", "sparsity", "seed", "status", "epochs", "error"]
    return Table("Runs that did not complete", header, rows)


def problems_table(runs: list[Run], report_dir: Path) -> Table:
    """Every file of a run that could not be read, and whether the run still entered the tables."""
    compared = set(run.run_dir for run in runs_to_compare(runs))
    rows = [
        [shown_path(run.run_dir, report_dir), problem, "yes" if run.run_dir in compared else "no"]
        for run in runs
        for problem in run.problems
    ]
    return Table("Files that could not be read", ["run", "problem", "in the tables"], rows)


def shown_path(path: Path, base: Path) -> str:
    base = base.resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _epochs_text(run: Run) -> str:
    done = run.summary.get("epochs_completed", len(run.metrics))
    planned = run.summary.get("epochs")
    return f"{done}/{planned}" if planned is not None else str(done)
