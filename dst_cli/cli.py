"""`dst-train`: the only Hydra entry point; checks the config, then hands it to train().

Nothing heavy is imported at module level (no torch, torchvision or scikit-learn): a bad value is refused,
and --help answered, before PyTorch loads.
"""
import importlib.resources
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dst_cli.distributed import launched_by_torchrun
from dst_cli.errors import UserError

MULTIRUN_FLAGS = ("-m", "--multirun")


def holds_a_run(run_dir: Path) -> bool:
    from dst_cli.rundir import RunDir

    paths = RunDir(run_dir)
    return any(path.exists() for path in (paths.metrics, paths.summary, paths.checkpoints))


def fail(message: str, code: int) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: said once
        print(f"dst-train: {message}", file=sys.stderr)
    sys.exit(code)


def fail_job(message: str, code: int) -> None:
    """One run failed: stop a single run; in a sweep, report it and go on with the other jobs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        print(f"dst-train: job {HydraConfig.get().job.num}: {message}", file=sys.stderr)
        return
    fail(message, code)


@hydra.main(version_base="1.3", config_path="pkg://dst_cli.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from dst_cli.console import print_summary
    from dst_cli.sparse import MasksDiverged
    from dst_cli.train import Interrupted, NonFiniteLoss, train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = not holds_a_run(run_dir)
    try:
        summary = train(cfg, run_dir)
    except UserError as error:
        if fresh and int(os.environ.get("RANK", "0")) == 0:  # bad input: leave no half-written run dir
            shutil.rmtree(run_dir, ignore_errors=True)
        return fail_job(f"error: {error}", 2)
    except Interrupted as stopped:
        print(f"dst-train: {stopped}; checkpoint saved, run the same command with hydra.run.dir={run_dir} to resume",
              file=sys.stderr)
        stopped.stop.forward()  # e.g. submitit requeues the job now that the checkpoint is on disk
        sys.exit(128 + (stopped.stop.signum or signal.SIGTERM))
    except (NonFiniteLoss, MasksDiverged) as error:
        return fail_job(f"run failed: {error} (status 'failed' in {run_dir / 'summary.json'})", 1)
    if summary:  # rank 0
        print_summary(summary)
        return summary["best_test_acc"]
    return None


def group_options(group: str) -> list[str] | None:
    """The options of config group `group`, or None if there is no such group."""
    folder = importlib.resources.files("dst_cli.conf").joinpath(group)
    if not folder.is_dir():
        return None
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def unknown_group_option(args: list[str]) -> str | None:
    """Hydra reports an unknown group option over many lines; name it in one, with the allowed options."""
    for arg in args:
        key, equals, value = arg.partition("=")
        if not equals or not key.isidentifier() or "(" in value:
            continue
        options = group_options(key)
        if options is None:
            continue
        for choice in value.split(","):
            if choice not in options and choice != "null":
                return f"{key}={choice} is not an option; allowed: {', '.join(options)}"
    return None


def with_custom_plugins(args: list[str]) -> list[str]:
    """`model._target_=X` (likewise dataset, acq) without a group choice selects `<group>=custom` first, so
    the arguments of the built-in it replaces (e.g. model.width) are not handed to X."""
    from dst_cli.config import PLUGIN_GROUPS

    chosen = {arg.partition("=")[0].lstrip("+") for arg in args}
    custom = [f"{group}=custom" for group in PLUGIN_GROUPS
              if f"{group}._target_" in chosen and group not in chosen]
    return [*custom, *args]


def torchrun_args(args: list[str]) -> list[str]:
    """Under torchrun all ranks share one run dir, which must therefore be named; only rank 0 writes Hydra's files."""
    if not any(arg.startswith("hydra.run.dir=") for arg in args):
        fail("error: under torchrun give the run dir every rank shares: hydra.run.dir=outputs/runs/NAME", 2)
    if int(os.environ.get("RANK", "0")) == 0:
        return args
    return [*args, "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def composition_problem(error: Exception) -> str:
    """Hydra's multi-line composition error as one line naming the key (and, for a bad value, what is allowed)."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    from dst_cli.config import describe_bad_key

    cause = error
    while cause.__cause__ is not None and not isinstance(cause, (ValidationError, ConfigAttributeError,
                                                                  ConfigKeyError)):
        cause = cause.__cause__
    if isinstance(cause, (ValidationError, ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return describe_bad_key(cause.full_key, cause.value, unknown=not isinstance(cause, ValidationError))
    return " ".join(str(error).split()) or type(error).__name__


def check_before_start(args: list[str]) -> None:
    """Compose the config as Hydra will and check every value (schema, plug-in arguments, optimizer, acquisition)
    before Hydra creates the run dir; a problem ends the program with one line and exit status 2."""
    from hydra import compose, initialize_config_module

    from dst_cli.build import check_run

    try:
        with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=args)
        check_run(cfg)
    except UserError as error:
        fail(f"error: {error}", 2)
    except Exception as error:  # Hydra's and OmegaConf's composition errors
        fail(f"error: {composition_problem(error)}", 2)


def main() -> None:
    args = sys.argv[1:]
    try:
        from dst_cli.help import maybe_print_help
    except ImportError:  # dst_cli.help not written yet
        maybe_print_help = None
    if maybe_print_help is not None:
        maybe_print_help(args)
    problem = unknown_group_option(args)
    if problem:
        fail(f"error: {problem}", 2)
    args = with_custom_plugins(args)
    if launched_by_torchrun():
        args = torchrun_args(args)
    if not any(arg.startswith("-") for arg in args):  # a single run; each job of a sweep checks itself
        check_before_start(args)
    sys.argv[1:] = args
    hydra_main()
    from dst_cli.callbacks import SweepReport

    if SweepReport.unfinished_runs:
        fail(f"{SweepReport.unfinished_runs} run(s) of the sweep did not complete; report.md in the sweep dir lists them", 1)
