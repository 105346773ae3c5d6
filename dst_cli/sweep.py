"""A sweep (dst-train -m, or an experiment that is one): every job checked before the first starts, then
Hydra's sweeper and launcher run them, its callbacks write the report, and the jobs that did not complete
are counted from their run dirs.

With Hydra's basic sweeper every job is known in advance and each is composed and checked; a tuning sweeper
(Optuna's) picks its trials as it goes: the setting they share is checked, tuning maximises the validation
accuracy each run returns (never the test accuracy: a dataset without a validation split is refused), and a
failed trial is recorded as failed (the run returns None), not as a value.
"""
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dst_cli.errors import UserError

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
RUNS_PER_GPU = 4  # one run keeps an H200 ~35% busy; 4 at once gave 50,400 images/s, 8 at once 52,000


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def packing_overrides(overrides: list[str]) -> list[str]:
    """On a machine with GPUs, a sweep whose launcher the command line does not choose runs RUNS_PER_GPU jobs per
    visible GPU side by side through Hydra's joblib launcher (each job on GPU job_number % GPUs: dst_cli.job);
    hydra.launcher.n_jobs still sets how many. On CPU the jobs run one after another, as Hydra's basic launcher
    runs them."""
    import importlib.util

    keys = {override.lstrip("+~").partition("=")[0] for override in overrides}
    if "hydra/launcher" in keys or "trainer.device=cpu" in overrides:
        return []
    gpus = visible_gpus()
    if gpus == 0 or importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        return []
    packed = ["hydra/launcher=joblib"]
    if "hydra.launcher.n_jobs" not in keys:
        packed.append(f"hydra.launcher.n_jobs={RUNS_PER_GPU * gpus}")
    return packed


def check_jobs(hydra, sweep_cfg: DictConfig, jobs: list[list[str]]) -> None:
    """Compose and check every job; one message naming the bad ones (grouped by what is wrong)."""
    from dst_cli.build import check_run
    from dst_cli.compose import job_config

    problems: dict[str, list[int]] = {}
    for number, job in enumerate(jobs):
        try:
            check_run(job_config(hydra, sweep_cfg, job))
        except UserError as error:
            problems.setdefault(str(error), []).append(number)
    if problems:
        bad = sum(len(numbers) for numbers in problems.values())
        lines = [f"job{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} ({' '.join(jobs[numbers[0]])}"
                 f"{' ...' if len(numbers) > 1 else ''}): {problem}" for problem, numbers in problems.items()]
        raise UserError(f"{bad} of {len(jobs)} jobs of the sweep would fail, so none was started:\n  "
                        + "\n  ".join(lines))


def check_tuning(hydra, sweep_cfg: DictConfig) -> None:
    """The setting every trial shares passes the checks and has a validation split to tune on; tuning
    maximises (the objective is an accuracy) unless the command line says otherwise."""
    from dst_cli.build import build_data, check_run
    from dst_cli.compose import job_config, parse_overrides
    from dst_cli.data import LoaderSettings

    shared = [o.input_line for o in parse_overrides(list(sweep_cfg.hydra.overrides.task)) if not o.is_sweep_override()]
    cfg = job_config(hydra, sweep_cfg, shared)
    check_run(cfg)
    import torch

    settings = LoaderSettings(cfg.trainer.batch_size, cfg.trainer.eval_batch_size, cfg.seed, torch.device("cpu"))
    if build_data(cfg.dataset, settings).val is None:
        raise UserError("tuning maximises the validation accuracy, and this dataset has no validation split "
                        "(the test split is never tuned on); give it one, e.g. dataset.val_size=5000 for CIFAR")
    if not any(o.startswith("hydra.sweeper.direction=") for o in sweep_cfg.hydra.overrides.hydra):
        with open_dict(sweep_cfg):
            sweep_cfg.hydra.sweeper.direction = "maximize"


def unfinished_runs(sweep_dir: Path) -> int:
    """Runs under the sweep dir whose summary.json does not say completed (failed, interrupted, none)."""
    from dst_cli.report.runs import collect_runs

    if not sweep_dir.is_dir():
        return 0
    try:
        return sum(run.status != "completed" for run in collect_runs([sweep_dir]))
    except UserError:  # no run dir at all
        return 0


def run_sweep(hydra, sweep_cfg: DictConfig) -> int:
    """Check the jobs, run the sweep as Hydra.multirun does (on this config), and return how many runs did not
    complete."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.plugins import Plugins
    from hydra.core.utils import configure_log
    from hydra.types import HydraContext

    from dst_cli.compose import CONFIG_NAME, sweep_jobs
    from dst_cli.job import run_job_task
    from dst_cli.rundir import refuse_unwritable

    jobs = sweep_jobs(hydra, sweep_cfg)
    if jobs is not None:
        check_jobs(hydra, sweep_cfg, jobs)
    elif sweep_cfg.hydra.sweeper.get("_target_") == OPTUNA_SWEEPER:
        check_tuning(hydra, sweep_cfg)
    sweep_dir = Path(str(sweep_cfg.hydra.sweep.dir)).absolute()
    refuse_unwritable(sweep_dir, "hydra.sweep.dir")
    configure_log(sweep_cfg.hydra.hydra_logging, sweep_cfg.hydra.verbose)
    callbacks = Callbacks(sweep_cfg)
    callbacks.on_multirun_start(config=sweep_cfg, config_name=CONFIG_NAME)
    sweeper = Plugins.instance().instantiate_sweeper(
        config=sweep_cfg, hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
        task_function=run_job_task)
    try:
        sweeper.sweep(arguments=OmegaConf.to_container(sweep_cfg.hydra.overrides.task, resolve=False))
    except ValueError as error:  # Optuna's study with no completed trial
        if jobs is not None:
            raise
        callbacks.on_multirun_end(config=sweep_cfg, config_name=CONFIG_NAME)
        raise UserError(f"the sweeper stopped: {' '.join(str(error).split())} (every trial failed? "
                        f"report.md in {sweep_dir} lists them)") from None
    callbacks.on_multirun_end(config=sweep_cfg, config_name=CONFIG_NAME)  # the sweep report
    return unfinished_runs(sweep_dir)
