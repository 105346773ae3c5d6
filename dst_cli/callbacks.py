"""Hydra callbacks: the sweep report when a multirun ends (dst_cli.report and matplotlib load only then).

Configured in conf/hydra/default.yaml; `~hydra.callbacks.sweep_report` switches the report off (a tuning sweep
that must not look at test accuracy does). How many jobs did not complete is counted by dst_cli.sweep from the
run dirs, not here."""
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    """summary.csv, report.md and the plots in the sweep dir, and the tables printed."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from dst_cli.report import sweep_report  # here: matplotlib costs single runs ~1 s

        sweep_report(Path(str(config.hydra.sweep.dir)))
