"""dst-train ends its process without the interpreter's teardown, losing nothing on the way out."""
import subprocess
import sys

import pytest

from dst_cli.cli import exit_status


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (2, 2), (143, 143), ("a message", 1)])
def test_exit_status_is_the_one_python_gives_sys_exit(code, status, capsys):
    assert exit_status(code) == status
    assert capsys.readouterr().err == ("a message\n" if isinstance(code, str) else "")


def test_end_process_runs_exit_handlers_and_flushes_the_streams_before_exiting(tmp_path):
    marker = tmp_path / "handler-ran"
    result = run_python(
        "import atexit, pathlib, sys, logging\n"
        "from dst_cli.cli import end_process\n"
        f"log = logging.getLogger('x'); log.addHandler(logging.FileHandler({str(tmp_path / 'log')!r}))\n"
        "log.warning('logged line')\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "print('buffered, no newline', end='')\n"
        "sys.stderr.write('err line')\n"
        "end_process(3)\n"
        "print('never')\n"
    )
    assert result.returncode == 3
    assert result.stdout == "buffered, no newline" and result.stderr == "err line"
    assert marker.read_text() == "yes"
    assert (tmp_path / "log").read_text() == "logged line\n"


def test_end_process_exits_the_ordinary_way_while_other_threads_run(tmp_path):
    """A running non-daemon thread is joined (os._exit would kill it): its file is written."""
    done = tmp_path / "thread-done"
    result = run_python(
        "import pathlib, threading, time\n"
        "from dst_cli.cli import end_process\n"
        f"threading.Thread(target=lambda: (time.sleep(0.5), pathlib.Path({str(done)!r}).write_text('yes'))).start()\n"
        "end_process(4)\n"
    )
    assert result.returncode == 4
    assert done.read_text() == "yes"


def test_python_m_dst_cli_keeps_the_exit_status_of_a_refused_value(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dst_cli", "trainer.bf16=maybe", f"hydra.run.dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "trainer.bf16=maybe" in result.stderr
    assert not (tmp_path / "run").exists()
