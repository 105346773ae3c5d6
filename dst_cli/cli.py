"""`dst-train`: read the command line, compose and check the config, then let Hydra run it.

The flags are Hydra's (its argument parser); the config is composed once through a Hydra instance made as
hydra.main makes it (dst_cli.compose). A single run is checked, then run by Hydra's run_job in its run dir
(dst_cli.job). A sweep's jobs are all composed and checked before the first starts (every bad job named in
one message, nothing run); then Hydra's sweeper and launcher run them, and its callbacks write the sweep
report. Every problem a user can cause is one line and exit status 2.
"""
import argparse
import functools
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from dst_cli.console import announce_start
from dst_cli.distributed import launched_by_torchrun
from dst_cli.errors import UserError
from dst_cli.help import maybe_print_help

# Under torchrun, how long a rank other than 0 that failed waits for the agent to stop it, so that rank 0 (which
# fails the same way) has said why before the agent's SIGTERM could cut it short.
OTHER_RANKS_WAIT_S = 60
HYDRA_ONLY_FLAGS = ("hydra_help", "info", "shell_completion", "experimental_rerun")


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fail(message: str, code: int) -> NoReturn:
    if is_rank0():  # under torchrun: said once
        print(f"dst-train: {message}", file=sys.stderr)
    elif launched_by_torchrun():
        time.sleep(OTHER_RANKS_WAIT_S)
    sys.exit(code)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}; allowed flags: -m, --cfg job|hydra|all, --resolve, --package PACKAGE, "
                        "--config-dir DIR, --help, --version")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Hydra's own flags and overrides; an unknown flag is one line."""
    from hydra._internal.utils import get_args_parser

    hydra_parser = get_args_parser()
    parser = OneLineParser(prog="dst-train", add_help=False, parents=[hydra_parser])
    return parser.parse_args(argv)


# ----- what the command runs -----
def torchrun_overrides(overrides: list[str]) -> list[str]:
    """Under torchrun all ranks share one run dir, which must therefore be named; only rank 0 logs to train.log."""
    if not any(arg.startswith("hydra.run.dir=") for arg in overrides):
        raise UserError("under torchrun give the run dir every rank shares: hydra.run.dir=outputs/runs/NAME")
    if is_rank0():
        return overrides
    return [*overrides, "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def composed(hydra, overrides: list[str], multirun: bool) -> tuple[DictConfig, RunMode]:
    """The config and its mode: a sweep with -m, or when the config says hydra.mode: MULTIRUN (dstee_table).
    A sweep's config says so itself (hydra.mode=MULTIRUN, as hydra.main adds it), so that every job, composed
    again by the launcher, knows it is one."""
    from dst_cli.compose import compose, wants_multirun
    from dst_cli.sweep import packing_overrides

    def sweep() -> tuple[DictConfig, RunMode]:
        settings = [*overrides, "hydra.mode=MULTIRUN", *packing_overrides(overrides)]
        return compose(hydra, settings, RunMode.MULTIRUN), RunMode.MULTIRUN

    if multirun:
        return sweep()
    try:
        cfg = compose(hydra, overrides, RunMode.RUN)
    except UserError:
        if not wants_multirun(hydra, overrides):
            raise
        return sweep()
    if cfg.hydra.mode == RunMode.MULTIRUN:
        return sweep()
    return cfg, RunMode.RUN


def show_config(cfg: DictConfig, args: argparse.Namespace) -> None:
    """--cfg job | hydra | all, as Hydra prints it (with --resolve and --package)."""
    if args.cfg == "job":
        with open_dict(cfg):
            del cfg["hydra"]
    elif args.cfg == "hydra":
        cfg = OmegaConf.create({"hydra": cfg.hydra})
    if args.package:
        cfg = OmegaConf.select(cfg, args.package)
    print(OmegaConf.to_yaml(cfg, resolve=args.resolve), end="")


def run_single(hydra, cfg: DictConfig) -> None:
    """Check the run, then run it as Hydra.run does, on this config (not composed again)."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import run_job
    from hydra.types import HydraContext

    from dst_cli.build import check_run
    from dst_cli.compose import CONFIG_NAME
    from dst_cli.job import run_job_task
    from dst_cli.rundir import DirOrigin, refuse_unwritable

    check_run(cfg)
    run_dir = Path(str(cfg.hydra.run.dir)).absolute()  # ${now:} is cached: run_job resolves the same path
    refuse_unwritable(run_dir, "hydra.run.dir")
    origin = DirOrigin.now(run_dir)  # before run_job creates the dir: only what this process made is removed
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.RUN
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
    result = run_job(hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
                     task_function=functools.partial(run_job_task, origin=origin), config=cfg,
                     job_dir_key="hydra.run.dir", job_subdir_key=None)
    callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=result)
    result.return_value  # noqa: B018 (re-raises what the task raised)


def launch(args: argparse.Namespace) -> int:
    """Run what the command line asks; the exit status."""
    from dst_cli.compose import hydra_instance

    with hydra_instance(args.config_dir) as hydra:
        return launch_with_hydra(hydra, args)


def launch_with_hydra(hydra, args: argparse.Namespace) -> int:
    from dst_cli.compose import with_derived_targets

    overrides = list(args.overrides)
    if launched_by_torchrun():
        overrides = torchrun_overrides(overrides)
    overrides = with_derived_targets(overrides)
    cfg, mode = composed(hydra, overrides, args.multirun)
    if args.cfg:
        show_config(cfg, args)
        return 0
    if mode == RunMode.RUN:
        run_single(hydra, cfg)
        return 0
    from dst_cli.sweep import run_sweep

    unfinished = run_sweep(hydra, cfg)
    if unfinished:
        fail(f"{unfinished} run(s) of the sweep did not complete; report.md in the sweep dir lists them", 1)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if maybe_print_help(args):
        return
    announce_start(args)
    try:
        parsed = parse_arguments(args)
        if any(getattr(parsed, flag) for flag in HYDRA_ONLY_FLAGS) or parsed.config_path or parsed.config_name:
            raise UserError("--hydra-help, --info, --shell-completion, --experimental-rerun, --config-path and "
                            "--config-name are Hydra's own; dst-train takes -m, --cfg, --resolve, --package and "
                            "--config-dir (see dst-train --help)")
        status = launch(parsed)
    except UserError as error:
        fail(f"error: {error}", 2)
    except KeyboardInterrupt:  # a second Ctrl-C: the first one's checkpoint was not waited for
        fail("stopped at once by a second Ctrl-C (no checkpoint written at this stop; the run dir keeps the last "
             "one, from which the same command resumes)", 128 + signal.SIGINT)
    sys.exit(status)


def exit_status(code: object) -> int:
    """The exit status Python gives `sys.exit(code)`: None is 0, an int itself, anything else (printed) 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(status: int) -> NoReturn:
    """Exit with `status` the ordinary way (exit handlers run, threads are joined, streams flushed), but first
    move every object out of the garbage collector's reach: with torch and torch._dynamo loaded, the
    interpreter's final collections take over a second after the last line (0.48 -> 0.16 s measured)."""
    gc.freeze()
    sys.exit(status)


def run() -> NoReturn:
    """The `dst-train` command: main(), then end_process. (Tests call main() so that their process lives on.)"""
    try:
        main()
    except SystemExit as stop:
        end_process(exit_status(stop.code))
    end_process(0)
