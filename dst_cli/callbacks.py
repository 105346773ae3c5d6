"""Hydra callbacks: build the sweep report when a multirun ends (dst_cli.report and matplotlib load only then)."""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """Writes summary.csv, report.md and the plots into the sweep dir and prints the tables."""

    # Runs of the last sweep that did not complete; the CLI turns it into its exit status.
    unfinished_runs = 0

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from dst_cli.report import build_report, print_report  # here: matplotlib costs single runs ~1 s

            report = build_report([sweep_dir], sweep_dir)
            SweepReport.unfinished_runs = sum(run.status != "completed" for run in report.runs)
            print_report(report)
        except Exception as error:  # a broken report must not turn a finished sweep into a failure
            reason = f"{type(error).__name__}: {error}"
            log.warning("could not build the sweep report in %s: %s", sweep_dir, reason)
