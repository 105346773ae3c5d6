"""dst-report: rebuild the tables and plots of runs and sweeps after the fact."""

import argparse
import sys
from pathlib import Path

from dst_cli.errors import UserError
from dst_cli.report.build import build_report, print_report

DESCRIPTION = """\
Collect the runs under each PATH (a run dir, a sweep dir, or any folder above them), then write
summary.csv (one row per run), report.md (methods x sparsities: best test accuracy as mean ± std over
distinct seeds, training and inference FLOPs; runs grouped by their resolved config) and PNG plots, and
print the tables. Runs that failed, never wrote summary.json or hold unreadable files are listed with
the reason, never dropped.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dst-report", description=DESCRIPTION)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run dir, sweep dir, or a folder above them")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder to write the report into (created if missing); "
        "default: the PATH itself when a single PATH is given, required with several PATHs",
    )
    return parser.parse_args(argv)


def report_dir(paths: list[Path], out: Path | None) -> Path:
    if out is not None:
        return out
    if len(paths) > 1:
        raise UserError(f"{len(paths)} PATHs given: choose where to write the report with --out DIR")
    return paths[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = build_report(args.paths, report_dir(args.paths, args.out))
    except UserError as error:
        print(f"dst-report: error: {error}", file=sys.stderr)
        return 2  # bad input, as for dst-train
    print_report(report)
    return 0
