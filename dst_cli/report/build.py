"""Build a report directory (summary.csv, report.md, plots) from runs, and print its tables."""

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from dst_cli.errors import UserError
from dst_cli.report.plots import acc_vs_sparsity_figure, curves_figure, layer_density_figure
from dst_cli.report.runs import Run, collect_runs
from dst_cli.report.sections import DENSE, Section, group_sections
from dst_cli.report.trials import find_studies, trials_figure, trials_table
from dst_cli.report.tables import (
    STAT_NOTE,
    Table,
    incomplete_runs_table,
    problems_table,
    runs_to_compare,
    section_tables,
    summary_csv,
)


@dataclass(frozen=True)
class Report:
    runs: list[Run]
    sections: list[tuple[str, list[Table]]]  # (setup title, its method x sparsity tables)
    warnings: list[str]  # seeds repeated within a cell
    incomplete: Table  # runs that did not complete
    problems: Table  # files that could not be read
    files: list[Path]  # everything written


def build_report(paths: list[Path], out_dir: Path) -> Report:
    """Collect the runs under paths and write summary.csv, report.md and the plots into out_dir.

    Raises UserError for a path without runs or an out_dir that cannot be written; each file is written
    whole or not at all.
    """
    runs = collect_runs(paths)
    sections = group_sections(runs_to_compare(runs))
    tables = [(section.title, section_tables(section)) for section in sections]
    studies = find_studies(runs)
    tables += [("Tuning", [trials_table(study)]) for study in studies]
    warnings = [warning for section in sections for warning in section.repeated_seeds()]
    incomplete = incomplete_runs_table(runs, out_dir)
    problems = problems_table(runs, out_dir)

    plots = _plots(runs, sections, out_dir)
    plots.update({out_dir / f"trials_{study.sweep_dir.name}.png": _saver(lambda study=study: trials_figure(study))
                  for study in studies})
    markdown = markdown_report(runs, tables, warnings, incomplete, problems, list(plots))
    files = {
        out_dir / "summary.csv": lambda path: path.write_text(summary_csv(runs)),
        out_dir / "report.md": lambda path: path.write_text(markdown),
        **plots,
    }
    _make_report_dir(out_dir)
    for path, write in files.items():
        _write_whole(path, write)
    return Report(runs, tables, warnings, incomplete, problems, list(files))


def _make_report_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; the report is written into a folder (give another --out DIR)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the report folder {out_dir}: {error.strerror or error}") from None


def _write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """write() into a temporary file beside path, then rename it: a failure leaves the old file (or none)."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix matplotlib reads
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _plots(runs: list[Run], sections: list[Section], out_dir: Path) -> dict[Path, Callable[[Path], None]]:
    """The sweep plots (none without a run to show), and the layer densities of a lone run."""
    if not sections:
        return {}
    figures = {
        "acc_vs_sparsity.png": lambda: acc_vs_sparsity_figure(sections),
        "test_acc_curves.png": lambda: curves_figure(
            sections, "test/acc", "test accuracy (%)", "Test accuracy per epoch"
        ),
    }
    if any(section.methods != [DENSE] for section in sections):
        figures["explored_curves.png"] = lambda: curves_figure(
            sections, "mask/explored", "explored (% of prunable weights)", "Explored weights per epoch", with_dense=False
        )
    if len(runs) == 1 and runs[0].summary.get("layers"):
        figures["layer_density.png"] = lambda: layer_density_figure(runs[0])
    return {out_dir / name: _saver(make_figure) for name, make_figure in figures.items()}


def _saver(make_figure: Callable[[], Figure]) -> Callable[[Path], None]:
    """Draws the figure only when it is written (a figure per call: no state kept between files)."""
    return lambda path: make_figure().savefig(path)


def status_line(runs: list[Run]) -> str:
    counts = Counter(run.status for run in runs)
    return f"{len(runs)} runs: " + ", ".join(f"{count} {status}" for status, count in counts.items())


def markdown_report(
    runs: list[Run],
    sections: list[tuple[str, list[Table]]],
    warnings: list[str],
    incomplete: Table,
    problems: Table,
    plot_files: list[Path],
) -> str:
    lines = ["# DST report", "", status_line(runs) + ".", "", STAT_NOTE, ""]
    if warnings:
        lines += ["## Warnings", "", *(f"- {warning}" for warning in warnings), ""]
    for setup_title, tables in sections:
        lines += [f"## {setup_title}", ""]
        for table in tables:
            lines += [f"### {table.title}", "", *markdown_table(table), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{path.stem}]({path.name})" for path in plot_files] + [""]
    lines += [f"## {incomplete.title} ({len(incomplete.rows)})", ""]
    lines += markdown_table(incomplete) if incomplete.rows else ["None."]
    if problems.rows:
        lines += ["", f"## {problems.title}", "", *markdown_table(problems)]
    return "\n".join(lines) + "\n"


def markdown_table(table: Table) -> list[str]:
    def cell(row: int, column: int, text: str) -> str:
        text = text.replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if (row, column) in table.bold else text

    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for row, values in enumerate(table.rows):
        lines.append("| " + " | ".join(cell(row, column, text) for column, text in enumerate(values)) + " |")
    return lines


def print_report(report: Report, console: Console | None = None) -> None:
    """The report's tables and warnings in the terminal, and where its files are."""
    console = console or Console()
    console.print(status_line(report.runs), markup=False)
    for warning in report.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    for setup_title, tables in report.sections:
        console.rule(Text(setup_title))
        for table in tables:
            console.print(rich_table(table))
    for table in (report.incomplete, report.problems):
        if table.rows:
            console.print(rich_table(table))
    console.print(STAT_NOTE)
    out_dir = report.files[0].parent
    names = ", ".join(path.name for path in report.files)
    console.print(f"Report written to {out_dir}: {names}", markup=False)


def rich_table(table: Table) -> RichTable:
    shown = RichTable(title=table.title, box=box.SIMPLE_HEAD, min_width=len(table.title) + 2)
    for header in table.header:
        shown.add_column(header)
    for row, values in enumerate(table.rows):
        styles = ["bold" if (row, column) in table.bold else "" for column in range(len(values))]
        shown.add_row(*(Text(text, style=style) for text, style in zip(values, styles)))
    return shown
