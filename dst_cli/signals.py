"""Graceful stop: SIGTERM, SIGUSR1, SIGUSR2 (cluster preemption and time limits) and the first Ctrl-C set a
flag that the training loop checks at the next step boundary, where it saves a checkpoint and exits.

A handler that was installed before ours (e.g. submitit's, which requeues a SLURM job on its time-limit
signal) is called after our checkpoint is safely written: `StopRequest.forward()`.
"""
import shlex
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self.previous_handlers: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def handle(self, signum: int, frame) -> None:
        self.signum = signum
        # a second Ctrl-C stops at once
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def forward(self) -> None:
        """Pass the received signal on to the Python handler that was installed before ours, if any."""
        handler = self.previous_handlers.get(self.signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.signum, None)


@contextmanager
def stop_on_signals():
    """Install the handlers for the duration of a run (only possible in the main thread)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    request.previous_handlers = {signum: signal.signal(signum, request.handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in request.previous_handlers.items():
            signal.signal(signum, handler)


@contextmanager
def signals_held():
    """The stop signals wait until the block is done (then the handler in place acts on them): what the block
    writes is not cut off midway. Only the main thread can hold them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def resume_command(args: list[str], run_dir: Path, sweep_dir: Path | None, program: str = "dst-train") -> str:
    """The command that continues where this stopped: inside a sweep the sweep (its `-m` arguments and
    hydra.sweep.dir, so finished jobs are skipped and the others resume), else the run (hydra.run.dir)."""
    key, folder = ("hydra.sweep.dir", sweep_dir) if sweep_dir is not None else ("hydra.run.dir", run_dir)
    kept = [arg for arg in args if not arg.startswith(f"{key}=")]
    return f"{program} {shlex.join([*kept, f'{key}={folder}'])}"


def interruption_message(signal_name: str | None, step: int, checkpoint: Path | None, resume: str) -> str:
    """One line that claims a checkpoint only when one was written at this stop (`checkpoint` is its path)."""
    stopped = f"stopped by {signal_name or 'a signal to another rank'} at step {step}"
    if checkpoint is None:
        return f"{stopped}; no checkpoint was written (trainer.checkpoint=false), so this run cannot be resumed"
    return f"{stopped}; checkpoint saved to {checkpoint}; to resume: {resume}"
