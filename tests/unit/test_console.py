"""The terminal and train.log views of a run: bar mode, log mode, line width, the first line on Enter."""
import contextlib
import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dst_cli.console import EpochProgress, announce_start, job_label, print_summary, starting_line

FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default format


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def row(epoch: int, val: bool = True) -> dict:
    values = {"epoch": epoch, "train/loss": 0.0085, "train/acc": 1.0, "test/acc": 0.9944,
              "mask/density": 0.1, "mask/explored": 0.5329, "time/epoch_s": 1234.56}
    if val:
        values["val/acc"] = 0.9916
    return values


@pytest.fixture
def hydra_like_logging(tmp_path):
    """Root logger as Hydra's job logging sets it up: a terminal handler and train.log, both prefixed."""
    terminal = FakeTerminal()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    on_terminal = logging.StreamHandler(terminal)
    to_file = logging.FileHandler(tmp_path / "train.log")
    for handler in (on_terminal, to_file):
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.handlers = [on_terminal, to_file]
    root.setLevel(logging.INFO)
    yield terminal, tmp_path / "train.log"
    to_file.close()
    root.handlers, root.level = saved_handlers, saved_level


def visible_text(output: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)


def run_epochs(terminal: FakeTerminal, mode: str, epochs: int, val: bool = True) -> None:
    """A run's epochs with `terminal` as stdout (set here: pytest's capture replaces it after fixtures)."""
    with contextlib.redirect_stdout(terminal):
        progress = EpochProgress(mode, total_steps=4 * epochs, done_steps=0)
        with progress.running():
            for epoch in range(1, epochs + 1):
                progress.start_epoch(epoch)
                for _ in range(4):
                    progress.advance()
                progress.end_epoch(row(epoch, val), epochs)


@pytest.mark.parametrize("mode", ["bar", "log"])
def test_train_log_holds_a_header_and_one_line_per_epoch(hydra_like_logging, mode):
    terminal, train_log = hydra_like_logging
    run_epochs(terminal, mode, epochs=3)
    lines = train_log.read_text().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("[") and "[dst_cli][INFO] - " in line for line in lines)
    assert lines[0].split(" - ")[1].split() == ["epoch", "loss", "train", "val", "test", "density", "explored", "time"]
    assert [line.split(" - ")[1].split()[0] for line in lines[1:]] == ["1/3", "2/3", "3/3"]
    assert lines[1].split(" - ")[1].split()[1:] == ["0.0085", "100.00%", "99.16%", "99.44%", "10.00%", "53.29%",
                                                   "1234.6s"]


def test_bar_mode_prints_epoch_lines_without_prefix_or_source_reference(hydra_like_logging):
    terminal, _ = hydra_like_logging
    run_epochs(terminal, "bar", epochs=2)
    shown = visible_text(terminal.getvalue())
    epoch_lines = [line for line in re.split(r"[\r\n]", shown) if re.match(r"\s*\d+/2 ", line)]
    assert len(epoch_lines) == 2
    assert "[INFO]" not in shown and "console.py" not in shown
    # the terminal handler is given back its stream and format after the run
    handler = logging.getLogger().handlers[0]
    assert handler.stream is terminal and handler.formatter._fmt == FILE_FORMAT


def test_none_mode_logs_nothing(hydra_like_logging):
    terminal, train_log = hydra_like_logging
    run_epochs(terminal, "none", epochs=2)
    assert train_log.read_text() == ""


@pytest.mark.parametrize("val", [True, False])
def test_epoch_lines_fit_80_columns_for_long_runs(hydra_like_logging, val):
    terminal, train_log = hydra_like_logging
    run_epochs(terminal, "log", epochs=160, val=val)
    messages = [line.split(" - ", 1)[1] for line in train_log.read_text().splitlines()]
    assert len(messages) == 161
    assert max(len(message) for message in messages) <= 80
    assert len({len(message) for message in messages}) == 1  # columns stay aligned under the header


@pytest.fixture
def joblib_job():
    """Hydra's config as a joblib worker sees it while running job 3 of a multirun."""
    hydra = OmegaConf.structured(HydraConf)
    hydra.mode, hydra.job.num = "MULTIRUN", 3
    hydra.launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))
    yield
    HydraConfig.instance().cfg = None


def test_no_job_label_outside_a_multirun():
    assert job_label() == ""


def test_a_parallel_job_logs_its_number_and_no_bar(hydra_like_logging, joblib_job):
    terminal, train_log = hydra_like_logging
    run_epochs(terminal, "auto", epochs=2)
    messages = [line.split(" - ", 1)[1] for line in train_log.read_text().splitlines()]
    assert [message.split()[:3] for message in messages] == [["[job", "3]", "epoch"], ["[job", "3]", "1/2"],
                                                             ["[job", "3]", "2/2"]]
    assert "━" not in terminal.getvalue()


def test_summary_names_the_job(capsys, joblib_job):
    summary = {"status": "completed", "model": "cnn", "dataset": "digits", "method": "ee", "sparsity": 0.9,
               "best_metric": "val/acc", "best_epoch": 2, "best_test_acc": 0.93, "final_test_acc": 0.93,
               "density": 0.1, "explored": 0.12, "train_flops_ratio": 0.12, "inference_flops_ratio": 0.11,
               "epochs_completed": 2, "epochs": 2, "steps": 38, "wall_time_s": 3.2, "run_dir": "/tmp/x/3"}
    print_summary(summary)
    shown = capsys.readouterr().out
    assert "[job 3] dst-train completed" in shown and "[job 3] run dir: /tmp/x/3" in shown


def test_starting_line_names_the_settings(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    announce_start(["experiment=quickstart", "acq=rigl"])
    assert capsys.readouterr().out == ("dst-train: starting a run with experiment=quickstart acq=rigl "
                                       "(loading PyTorch...)\n")
    assert starting_line(["-m", "seed=0,1"]).startswith("dst-train: starting a sweep with seed=0,1 ")
    assert "the defaults" in starting_line([])
    monkeypatch.setenv("RANK", "1")
    announce_start([])
    assert capsys.readouterr().out == ""


def read_pty(command: list[str], cwd: Path, timeout_s: float) -> tuple[bytes, float | None, int]:
    """Run `command` on a pseudo-terminal of 80 columns; its output, seconds to the first byte, exit code."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80", "LINES": "24", "TERM": "xterm"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output, first_byte_s = b"", None
    while time.perf_counter() - started < timeout_s:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            first_byte_s = first_byte_s or time.perf_counter() - started
            output += chunk
        elif process.poll() is not None:
            break
    process.kill()
    os.close(leader)
    return output, first_byte_s, process.wait()


@pytest.mark.slow
def test_a_terminal_run_shows_a_line_at_once_and_leaves_one_log_line_per_epoch(tmp_path):
    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "dst-train"), "experiment=quickstart", "trainer.epochs=3",
               f"hydra.run.dir={run_dir}"]
    output, first_byte_s, code = read_pty(command, tmp_path, timeout_s=240)
    assert code == 0, output.decode(errors="replace")[-2000:]
    assert first_byte_s is not None and first_byte_s < 2.0  # well under 1 s on an idle machine; torch takes > 5 s
    messages = [line.split(" - ", 1)[1] for line in (run_dir / "train.log").read_text().splitlines() if " - " in line]
    assert [message.split()[0] for message in messages if re.match(r"\s*\d+/3 ", message)] == ["1/3", "2/3", "3/3"]
    shown = visible_text(output.decode(errors="replace"))
    assert "console.py" not in shown and "[dst_cli][INFO]" not in shown
