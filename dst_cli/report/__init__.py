"""Results of runs and sweeps: summary.csv, report.md, plots, and the dst-report command."""
import logging
from pathlib import Path

from dst_cli.report.build import Report, build_report, print_report
from dst_cli.report.cli import main

__all__ = ["Report", "build_report", "main", "print_report", "sweep_report"]


def sweep_report(sweep_dir: Path) -> int:
    """The report of a finished sweep, in its dir, its tables printed; the number of its runs that did not
    complete. A report that cannot be built is a warning: it does not turn a finished sweep into a failure."""
    try:
        report = build_report([sweep_dir], sweep_dir)
    except Exception as error:
        logging.getLogger("dst_cli").warning("could not build the sweep report in %s: %s: %s", sweep_dir,
                                             type(error).__name__, error)
        return 0
    print_report(report)
    return sum(run.status != "completed" for run in report.runs)
