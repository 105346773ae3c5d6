"""A tuning study in the report: Hydra's Optuna sweeper leaves optimization_results.yaml in its sweep dir;
each trial is a run of that dir. The report lists the trials (the tuned values, the objective each run
returned, its status) and plots the objective against each tuned value.

The objective is what the run returns to the sweeper: the best value of its monitored metric
(summary.json's best_metric_value, val/acc for a tuning run), never the test accuracy.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from dst_cli.report.runs import Run
from dst_cli.report.tables import Table

RESULTS_NAME = "optimization_results.yaml"  # written by hydra-optuna-sweeper into the sweep dir


@dataclass(frozen=True)
class Study:
    sweep_dir: Path
    best_params: dict
    best_value: float | None
    trials: list[Run]  # the runs of the sweep dir, in job order

    @property
    def params(self) -> list[str]:
        return list(self.best_params)


def find_studies(runs: list[Run]) -> list[Study]:
    """The studies among the runs' sweep dirs (a run's parent holding optimization_results.yaml)."""
    by_dir: dict[Path, list[Run]] = {}
    for run in runs:
        if (run.run_dir.parent / RESULTS_NAME).is_file():
            by_dir.setdefault(run.run_dir.parent, []).append(run)
    studies = []
    for sweep_dir, trials in by_dir.items():
        try:
            results = yaml.safe_load((sweep_dir / RESULTS_NAME).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # not readable: the runs still appear in the tables
        best = results.get("best_params") if isinstance(results, dict) else None
        if isinstance(best, dict) and best:
            studies.append(Study(sweep_dir, best, results.get("best_value"), trials))
    return studies


def objective(run: Run) -> float | None:
    value = run.summary.get("best_metric_value") if run.status == "completed" else None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def trials_table(study: Study) -> Table:
    metric = next((run.summary.get("best_metric") for run in study.trials if objective(run) is not None), "objective")
    header = ["trial", *study.params, f"best {metric}", "status"]
    rows, bold = [], set()
    best = max((objective(run) for run in study.trials if objective(run) is not None), default=None)
    for number, run in enumerate(study.trials):
        value = objective(run)
        rows.append([run.run_dir.name, *(f"{run.config.get(param, '-'):.4g}" if isinstance(run.config.get(param), float)
                                         else str(run.config.get(param, "-")) for param in study.params),
                     "-" if value is None else f"{100 * value:.2f}%", run.status])
        if value is not None and value == best:
            bold.add((number, len(header) - 2))
    title = f"Tuning study in {study.sweep_dir.name}: best {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in study.best_params.items())}"
    return Table(title, header, rows, bold)


def trials_figure(study: Study) -> Figure:
    """The objective against each tuned numeric value, one panel each; failed trials as x marks on the axis."""
    numeric = [param for param in study.params if all(isinstance(run.config.get(param), (int, float))
                                                      for run in study.trials if run.config.get(param) is not None)]
    figure = Figure(figsize=(5.5 * max(1, len(numeric)), 4.0), layout="constrained")
    figure.suptitle(f"Tuning study {study.sweep_dir.name}: objective per trial")
    for axis, param in zip(figure.subplots(1, max(1, len(numeric)), squeeze=False)[0], numeric):
        done = [(run.config[param], 100 * objective(run)) for run in study.trials
                if objective(run) is not None and run.config.get(param) is not None]
        failed = [run.config[param] for run in study.trials if objective(run) is None and run.config.get(param) is not None]
        if done:
            axis.scatter(*zip(*done), label="completed")
        if failed:
            low = min((value for _, value in done), default=0.0)
            axis.scatter(failed, [low] * len(failed), marker="x", color="red", label="failed")
        values = [value for value, _ in done] + failed
        if values and min(values) > 0 and max(values) / min(values) > 100:
            axis.set_xscale("log")
        axis.set_xlabel(param)
        axis.set_ylabel("objective (%)")
        axis.legend(fontsize=8)
    return figure
