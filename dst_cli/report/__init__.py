"""Results of runs and sweeps: summary.csv, report.md, plots, and the dst-report command."""

from dst_cli.report.build import Report, build_report, print_report
from dst_cli.report.cli import main

__all__ = ["Report", "build_report", "main", "print_report"]
