"""One job: a run in the run dir Hydra made for it. Claim the dir, prepare and train the run, and say how it
ended (one line for what the user can fix; in a sweep the other jobs go on).

Hydra's run_job calls run_job_task for a single run and for every job of a sweep, in this process or in a
launcher's worker (joblib, SLURM)."""
import logging
import signal
import sys
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig

from dst_cli.cli import fail, is_rank0
from dst_cli.distributed import launched_by_torchrun
from dst_cli.errors import UserError


def run_job_task(cfg: DictConfig, origin=None) -> float | None:
    """One run (or one job of a sweep) in the dir Hydra chose: claim it, train, say how it ended. Returns the
    run's objective, the best value of its monitored metric (val/acc when the dataset has a validation split,
    else test/acc), or None when it failed (a tuning sweeper records that trial as failed). Only rank 0 owns
    the dir (its lock, .hydra/, summary.json)."""
    from hydra.core.hydra_config import HydraConfig

    from dst_cli.build import prepare
    from dst_cli.checkpoint import NonFiniteState
    from dst_cli.console import print_summary
    from dst_cli.rundir import RunDir, WriteFailed
    from dst_cli.sparse import MasksDiverged
    from dst_cli.train import Interrupted, NonFiniteLoss

    hydra_config = HydraConfig.get()
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    if in_sweep:
        pin_to_gpu(int(hydra_config.job.num))
    run = RunDir(hydra_config.runtime.output_dir, origin)
    overrides = list(hydra_config.overrides.task)
    try:
        if is_rank0():
            run.claim()
        trainer = prepare(cfg, run, record=lambda recipe: run.write_hydra_record(
            recipe, HydraConfig.instance().cfg, overrides), choices=dict(hydra_config.runtime.choices),
            overrides=overrides)
        summary = trainer.run()
    except UserError as error:  # a bad value, a refused resume, a failed build, a dir in use
        if run.owned and in_sweep:
            run.record_refused(cfg, f"error: {error}", overrides)
        elif run.owned:
            run.discard()  # only what this process created
        return job_failed(f"error: {error}", 2, in_sweep)
    except Interrupted as stopped:
        if is_rank0():
            print(f"dst-train: {interruption_line(stopped, run, in_sweep)}", file=sys.stderr)
        stopped.stop.forward()  # e.g. submitit requeues the job now that the checkpoint is on disk
        sys.exit(128 + (stopped.stop.signum or signal.SIGTERM))  # on every rank
    except (NonFiniteLoss, NonFiniteState, MasksDiverged, WriteFailed) as error:
        where = (f"status 'failed' in {run.summary}" if run.recorded_status() == "failed"
                 else f"{run.summary} could not be written")
        return job_failed(f"run failed: {error} ({where})", 1, in_sweep)
    except Exception as error:  # a crash (a bug, out of memory): a single run shows the traceback
        if not in_sweep:
            raise
        # in a sweep the job is recorded, its traceback goes to its train.log, and the other jobs go on
        logging.getLogger("dst_cli").exception("the run crashed")
        reason = f"{type(error).__name__}: {error}"
        if run.owned and run.recorded_status() != "failed":
            run.record_refused(cfg, reason, overrides)
        return job_failed(f"run crashed: {reason} (traceback in {run.log})", 1, in_sweep)
    if summary:  # rank 0
        print_summary(summary)
        return summary["best_metric_value"]
    return None


def pin_to_gpu(job_number: int) -> None:
    """Jobs of a sweep packed on a machine with several GPUs take GPU job_number % GPUs (the default device of
    this process: trainer.device=cuda and auto use it)."""
    import torch

    if torch.cuda.device_count() > 1:
        torch.cuda.set_device(job_number % torch.cuda.device_count())


def job_failed(message: str, code: int, in_sweep: bool) -> None:
    """One run failed: stop a single run; in a sweep, say so and go on with the other jobs."""
    if not in_sweep:
        fail(message, code)
    if is_rank0():
        from hydra.core.hydra_config import HydraConfig

        print(f"dst-train: job {HydraConfig.get().job.num}: {message}", file=sys.stderr)


def interruption_line(stopped, run, in_sweep: bool) -> str:
    """What stopped the run, whether a checkpoint was written, and the command that resumes it (inside a
    sweep: the sweep's command with its hydra.sweep.dir)."""
    from hydra.core.hydra_config import HydraConfig

    from dst_cli.signals import interruption_message, resume_command

    sweep_dir = Path(HydraConfig.get().sweep.dir).absolute() if in_sweep else None
    program = "torchrun <the same torchrun options> -m dst_cli" if launched_by_torchrun() else "dst-train"
    resume = resume_command(sys.argv[1:], run.path, sweep_dir, program=program)
    return interruption_message(stopped.stop.signal_name, stopped.step, stopped.checkpoint, resume)
