"""Run-dir ownership: the lock, removing only what this process created, atomic writes, truthful messages."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dst_cli.errors import UserError
from dst_cli.rundir import DirOrigin, RunDir, RunDirOrigin
from dst_cli.signals import interruption_message, resume_command


def write_run_files(run: RunDir) -> None:
    """What a run creates before a bad value or a failed build stops it."""
    run.log.write_text("log\n")
    run.metrics.write_text('{"epoch": 1}\n')
    run.summary.write_text("{}\n")
    run.last_checkpoint.parent.mkdir()
    run.last_checkpoint.write_bytes(b"ckpt")
    run.write_hydra_record(OmegaConf.create({"seed": 0}), OmegaConf.create({"hydra": {}}), ["seed=0"])


def test_a_new_dir_and_the_parents_it_needed_are_removed_by_discard(tmp_path):
    path = tmp_path / "outputs" / "runs" / "today"
    run = RunDir(path, DirOrigin.now(path))
    run.claim()
    write_run_files(run)
    run.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_user_folder_with_files_survives_discard_with_only_the_run_files_gone(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_bytes(b"123")
    run = RunDir(tmp_path, DirOrigin.now(tmp_path))
    run.claim()
    write_run_files(run)
    run.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "my notes"


def test_an_empty_folder_that_existed_is_not_removed(tmp_path):
    """`hydra.run.dir=.` in a fresh empty folder: the folder stays."""
    run = RunDir(tmp_path, DirOrigin.now(tmp_path))
    run.claim()
    write_run_files(run)
    run.discard()
    assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []


def test_an_earlier_runs_files_survive_a_refused_start(tmp_path):
    earlier = RunDir(tmp_path)
    earlier.claim()
    earlier.metrics.write_text('{"epoch": 1}\n')
    earlier.last_checkpoint.parent.mkdir()
    earlier.last_checkpoint.write_bytes(b"ckpt")
    earlier.write_hydra_record(OmegaConf.create({"seed": 0}), OmegaConf.create({"hydra": {}}), ["seed=0"])
    earlier.release()
    record = {p.name: p.read_bytes() for p in earlier.hydra_record.iterdir()}

    run = RunDir(tmp_path, DirOrigin.now(tmp_path))
    run.claim()
    run.log.write_text("log\n")
    run.summary.write_text("{}\n")
    run.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dst-train.lock", ".hydra", "checkpoints", "metrics.jsonl"]
    assert {p.name: p.read_bytes() for p in run.hydra_record.iterdir()} == record


def test_discard_by_a_process_that_does_not_own_the_dir_removes_nothing(tmp_path):
    path = tmp_path / "run"
    run = RunDir(path, DirOrigin.now(path))
    path.mkdir()
    run.log.write_text("log\n")
    run.discard()
    assert run.log.exists()


HOLD = textwrap.dedent("""
    import sys, time
    from dst_cli.rundir import RunDir
    RunDir(sys.argv[1]).claim()
    print("claimed", flush=True)
    time.sleep(60)
""")


def test_a_second_claim_is_refused_naming_the_holders_pid_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "claimed\n"
        with pytest.raises(UserError) as refused:
            RunDir(tmp_path).claim()
        message = str(refused.value)
        assert f"pid {holder.pid} on " in message and "\n" not in message
        assert str(tmp_path) in message and "hydra.run.dir" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run = RunDir(tmp_path)
    run.claim()  # the kernel dropped the dead holder's lock
    assert run.lock.read_text().startswith(f"{os.getpid()} on ")


def test_claim_in_an_unwritable_place_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"hydra.run.dir=.*file/run cannot be used"):
        RunDir(tmp_path / "file" / "run").claim()


def test_claim_removes_temporary_files_a_kill_left_behind(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoints.mkdir()
    stale = [run.summary.with_name("summary.json.tmp"), run.checkpoints / "last.pt.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    run.claim()
    assert not any(path.exists() for path in stale)


HYDRA_APP = textwrap.dedent("""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from dst_cli.rundir import RunDir

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def main(cfg):
        run = RunDir(HydraConfig.get().runtime.output_dir)
        run.claim()
        run.metrics.write_text('{"epoch": 1}\\n')
        run.discard()  # as the CLI does for a bad value

    main()
""")


def run_hydra_app(tmp_path: Path, run_dir: str, cwd: Path) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(HYDRA_APP)
    overrides = ["+hydra.callbacks.origin._target_=dst_cli.rundir.RunDirOrigin", "hydra.output_subdir=null",
                 "hydra.job.name=train", f"hydra.run.dir={run_dir}"]
    return subprocess.run([sys.executable, str(app), *overrides], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("where", ["new nested dir", "user folder", "dot"])
def test_under_hydra_only_what_this_run_created_is_removed(tmp_path, where):
    """Hydra creates the dir and train.log before the task runs; the callback's record says what was there."""
    folder = tmp_path / "work"
    folder.mkdir()
    if where == "new nested dir":
        result = run_hydra_app(tmp_path, "outputs/runs/one", cwd=folder)
        assert result.returncode == 0, result.stderr
        assert list(folder.iterdir()) == []
        return
    (folder / "notes.txt").write_text("keep")
    result = run_hydra_app(tmp_path, "." if where == "dot" else str(folder), cwd=folder)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_an_unwritable_run_dir_is_refused_in_one_line_before_hydra_creates_it(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "file" / "run")}}})
    with pytest.raises(SystemExit) as exit:
        RunDirOrigin().on_run_start(config)
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        f"dst-train: error: hydra.run.dir={tmp_path / 'file' / 'run'} cannot be used "
        f"({tmp_path / 'file'} is a file); allowed: a writable folder\n"
    )


def test_the_resume_command_of_a_run_names_its_dir():
    command = resume_command(["experiment=quickstart", "hydra.run.dir=old"], Path("/r/run"), None)
    assert command == "dst-train experiment=quickstart hydra.run.dir=/r/run"


def test_the_resume_command_inside_a_sweep_resumes_the_sweep():
    args = ["-m", "experiment=quickstart", "sparsity=0.9,0.95"]
    command = resume_command(args, Path("/s/sweep/1"), Path("/s/sweep"))
    assert command == "dst-train -m experiment=quickstart sparsity=0.9,0.95 hydra.sweep.dir=/s/sweep"
    assert "hydra.run.dir" not in command


def test_the_interruption_message_claims_a_checkpoint_only_when_one_was_written():
    saved = interruption_message("SIGTERM", 37, Path("/r/checkpoints/last.pt"), "dst-train hydra.run.dir=/r")
    assert saved == ("stopped by SIGTERM at step 37; checkpoint saved to /r/checkpoints/last.pt; "
                     "to resume: dst-train hydra.run.dir=/r")
    unsaved = interruption_message("SIGTERM", 37, None, "dst-train hydra.run.dir=/r")
    assert "checkpoint saved" not in unsaved and "cannot be resumed" in unsaved and "resume:" not in unsaved
