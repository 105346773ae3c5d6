"""Hydra callbacks: the sweep report when a multirun ends (dst_cli.report and matplotlib load only then), handed
to the sweep's loggers (W&B media, MLflow artifacts).

Configured in conf/hydra/default.yaml; `~hydra.callbacks.sweep_report` switches the report off (a tuning sweep
that must not look at test accuracy does). How many jobs did not complete is counted by dst_cli.sweep from the
run dirs, not here."""
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

REPORT_FILES = ("summary.csv", "report.md")  # and every plot (*.png) in the sweep dir


class SweepReport(Callback):
    """summary.csv, report.md and the plots in the sweep dir, the tables printed, and the files logged by each
    logger of the sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from dst_cli.report import sweep_report  # here: matplotlib costs single runs ~1 s

        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_report(sweep_dir)
        log_report(config.get("logger") or {}, sweep_dir.absolute())


def report_files(sweep_dir: Path) -> list[Path]:
    return [path for path in (*(sweep_dir / name for name in REPORT_FILES), *sorted(sweep_dir.glob("*.png")))
            if path.is_file()]


def log_report(logger_nodes, sweep_dir: Path) -> None:
    """Each logger's log_sweep with the report's files. A logger that fails is a warning: the sweep has ended,
    its report is on disk."""
    from dst_cli.plugins import instantiate

    files = report_files(sweep_dir)
    if not files:
        return
    for name, node in logger_nodes.items():
        try:
            instantiate(f"logger.{name}", node).log_sweep(sweep_dir, files)
        except Exception as error:
            logging.getLogger("dst_cli").warning("logger=%s could not log the sweep report: %s: %s", name,
                                                 type(error).__name__, " ".join(str(error).split()))
