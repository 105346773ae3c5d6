"""`dst-train`: the only Hydra entry point; checks the config, then hands it to train().

Nothing heavy is imported at module level (no torch, torchvision or scikit-learn): a bad value is refused,
and --help answered, before PyTorch loads.
"""
import atexit
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from dst_cli.console import announce_start
from dst_cli.distributed import launched_by_torchrun
from dst_cli.errors import UserError
from dst_cli.help import group_options, maybe_print_help


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# Under torchrun, how long a rank other than 0 that failed waits for the agent to stop it, so that rank 0 (which
# fails the same way) has said why before the agent's SIGTERM could cut it short.
OTHER_RANKS_WAIT_S = 60


def fail(message: str, code: int) -> None:
    if is_rank0():  # under torchrun: said once
        print(f"dst-train: {message}", file=sys.stderr)
    elif launched_by_torchrun():
        time.sleep(OTHER_RANKS_WAIT_S)
    sys.exit(code)


class FailedJobs:
    """Jobs of this sweep (in this process) that ended in an error: the exit status holds even when the sweep
    report cannot be built."""

    count = 0


def fail_job(message: str, code: int) -> None:
    """One run failed: stop a single run; in a sweep, report it and go on with the other jobs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        FailedJobs.count += 1
        if is_rank0():
            print(f"dst-train: job {HydraConfig.get().job.num}: {message}", file=sys.stderr)
        return
    fail(message, code)


def recorded_status(path: Path) -> str | None:
    """The status summary.json holds, or None if it cannot be read."""
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def record_refused_job(run, cfg: DictConfig, error: str) -> None:
    """A sweep job refused before training still leaves summary.json (status failed, its error and overrides)
    and its .hydra/ record, so summary.csv and report.md list it. An earlier run's files are never replaced."""
    from hydra.core.hydra_config import HydraConfig

    from dst_cli.metrics import save_summary
    from dst_cli.rundir import SUMMARY_NAME, WriteFailed

    if SUMMARY_NAME in run.origin.entries:
        return
    overrides = list(HydraConfig.get().overrides.task)
    record = {"status": "failed", "error": error, "run_dir": str(run.path), "overrides": overrides,
              "sparsity": cfg.get("sparsity"), "seed": cfg.get("seed")}
    problem = save_summary(run.summary, record)
    if problem:
        print(f"dst-train: {problem}", file=sys.stderr)
    if not run.hydra_record.exists():
        try:
            run.write_hydra_record(cfg, HydraConfig.instance().cfg, overrides)
        except WriteFailed as failure:
            print(f"dst-train: {failure}", file=sys.stderr)


def interruption_line(stopped, run) -> str:
    """What stopped the run, whether a checkpoint was written, and the command that resumes it (inside a
    sweep: the sweep's command with its hydra.sweep.dir)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dst_cli.signals import interruption_message, resume_command

    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    sweep_dir = Path(HydraConfig.get().sweep.dir).absolute() if in_sweep else None
    program = "torchrun <the same torchrun options> -m dst_cli" if launched_by_torchrun() else "dst-train"
    resume = resume_command(sys.argv[1:], run.path, sweep_dir, program=program)
    return interruption_message(stopped.stop.signal_name, stopped.step, stopped.checkpoint, resume)


@hydra.main(version_base="1.3", config_path="pkg://dst_cli.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One run (or one job of a sweep) in the dir Hydra chose: claim it, train, say how it ended.

    Only rank 0 owns the dir (its lock, .hydra/, summary.json); every rank exits with the same status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dst_cli.checkpoint import NonFiniteState
    from dst_cli.console import print_summary
    from dst_cli.rundir import RunDir, WriteFailed
    from dst_cli.sparse import MasksDiverged
    from dst_cli.train import Interrupted, NonFiniteLoss, train

    run = RunDir(HydraConfig.get().runtime.output_dir)
    try:
        if is_rank0():
            run.claim()
        summary = train(cfg, run, record=lambda: run.write_hydra_record(
            cfg, HydraConfig.instance().cfg, list(HydraConfig.get().overrides.task)))
    except UserError as error:  # a bad value, a refused resume, a failed build, a dir in use
        if run.owned and HydraConfig.get().mode == RunMode.MULTIRUN:
            record_refused_job(run, cfg, f"error: {error}")
        elif run.owned:
            run.discard()  # only what this process created
        return fail_job(f"error: {error}", 2)
    except Interrupted as stopped:
        if is_rank0():
            print(f"dst-train: {interruption_line(stopped, run)}", file=sys.stderr)
        stopped.stop.forward()  # e.g. submitit requeues the job now that the checkpoint is on disk
        sys.exit(128 + (stopped.stop.signum or signal.SIGTERM))  # on every rank
    except (NonFiniteLoss, NonFiniteState, MasksDiverged, WriteFailed) as error:
        where = (f"status 'failed' in {run.summary}" if recorded_status(run.summary) == "failed"
                 else f"{run.summary} could not be written")
        return fail_job(f"run failed: {error} ({where})", 1)
    except Exception as error:  # a crash (a bug, out of memory): a single run shows the traceback
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # in a sweep the job is recorded, its traceback goes to its train.log, and the other jobs go on
        logging.getLogger("dst_cli").exception("the run crashed")
        reason = f"{type(error).__name__}: {error}"
        if run.owned and recorded_status(run.summary) != "failed":
            record_refused_job(run, cfg, reason)
        return fail_job(f"run crashed: {reason} (traceback in {run.log})", 1)
    if summary:  # rank 0
        print_summary(summary)
        return summary["best_test_acc"]
    return None


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
    return [*args, *custom]  # after any flags (-m): Hydra applies group choices before values anyway


def torchrun_args(args: list[str]) -> list[str]:
    """Under torchrun all ranks share one run dir, which must therefore be named; only rank 0 logs to train.log."""
    if not any(arg.startswith("hydra.run.dir=") for arg in args):
        fail("error: under torchrun give the run dir every rank shares: hydra.run.dir=outputs/runs/NAME", 2)
    if is_rank0():
        return args
    return [*args, "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


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
    if maybe_print_help(args):
        return
    announce_start(args)
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

    unfinished = max(SweepReport.unfinished_runs, FailedJobs.count)
    if unfinished:
        fail(f"{unfinished} run(s) of the sweep did not complete; report.md in the sweep dir lists them", 1)


def exit_status(code: object) -> int:
    """The exit status Python gives `sys.exit(code)`: None is 0, an int itself, anything else (printed) 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(status: int) -> NoReturn:
    """Exit with `status` now: run the exit handlers (logging's flush and close among them), flush the standard
    streams, then skip the interpreter's teardown of its modules, which takes over a second once torch and
    torch._dynamo are loaded. While other threads run (a joblib pool, say), exit the ordinary way, which joins
    them. Files a plug-in left open without closing them are not flushed by this path."""
    if threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(status)


def run() -> NoReturn:
    """The `dst-train` command: main(), then end_process. (Tests call main() so that their process lives on.)"""
    try:
        main()
    except SystemExit as stop:
        end_process(exit_status(stop.code))
    end_process(0)

