"""Build a report directory (summary.csv, report.md, plots) from runs, and print its tables."""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from dst_cli.report.plots import plot_acc_vs_sparsity, plot_curves, plot_layer_density
from dst_cli.report.runs import Run, collect_runs
from dst_cli.report.tables import (
    STAT_NOTE,
    Setup,
    Table,
    group_setups,
    incomplete_runs_table,
    runs_to_aggregate,
    setup_tables,
    write_summary_csv,
)


@dataclass(frozen=True)
class Report:
    runs: list[Run]
    sections: list[tuple[str, list[Table]]]  # (setup title, its acq x sparsity tables)
    incomplete: Table  # runs that did not complete
    files: list[Path]  # everything written


def build_report(paths: list[Path], out_dir: Path) -> Report:
    """Collect the runs under paths and write summary.csv, report.md and the plots into out_dir."""
    runs = collect_runs(paths)
    setups = group_setups(runs_to_aggregate(runs))
    sections = [(setup.title, setup_tables(setup)) for setup in setups]
    incomplete = incomplete_runs_table(runs, out_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    summary_csv = out_dir / "summary.csv"
    write_summary_csv(runs, summary_csv)
    plot_files = write_plots(runs, setups, out_dir)
    report_md = out_dir / "report.md"
    report_md.write_text(markdown_report(runs, sections, incomplete, plot_files))
    return Report(runs, sections, incomplete, [summary_csv, report_md, *plot_files])


def write_plots(runs: list[Run], setups: list[Setup], out_dir: Path) -> list[Path]:
    """The sweep plots (none without a run to show), and the layer densities of a lone run."""
    if not setups:
        return []
    acc_vs_sparsity = out_dir / "acc_vs_sparsity.png"
    test_acc_curves = out_dir / "test_acc_curves.png"
    explored_curves = out_dir / "explored_curves.png"
    plot_acc_vs_sparsity(setups, acc_vs_sparsity)
    plot_curves(setups, "test/acc", "test accuracy (%)", "Test accuracy per epoch", test_acc_curves)
    plot_curves(
        setups, "mask/explored", "explored (% of prunable weights)", "Explored weights per epoch", explored_curves
    )
    files = [acc_vs_sparsity, test_acc_curves, explored_curves]
    if len(runs) == 1 and runs[0].summary.get("layers"):
        layer_density = out_dir / "layer_density.png"
        plot_layer_density(runs[0], layer_density)
        files.append(layer_density)
    return files


def status_line(runs: list[Run]) -> str:
    counts = Counter(run.status for run in runs)
    return f"{len(runs)} runs: " + ", ".join(f"{count} {status}" for status, count in counts.items())


def markdown_report(
    runs: list[Run], sections: list[tuple[str, list[Table]]], incomplete: Table, plot_files: list[Path]
) -> str:
    lines = ["# DST report", "", status_line(runs) + ".", "", STAT_NOTE, ""]
    for setup_title, tables in sections:
        lines += [f"## {setup_title}", ""]
        for table in tables:
            lines += [f"### {table.title}", "", *markdown_table(table), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{path.stem}]({path.name})" for path in plot_files] + [""]
    lines += [f"## {incomplete.title}", ""]
    lines += markdown_table(incomplete) if incomplete.rows else ["None."]
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
    """The report's tables in the terminal, and where its files are."""
    console = console or Console()
    console.print(status_line(report.runs), markup=False)
    for setup_title, tables in report.sections:
        console.rule(Text(setup_title))
        for table in tables:
            console.print(rich_table(table))
    if report.incomplete.rows:
        console.print(rich_table(report.incomplete))
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
