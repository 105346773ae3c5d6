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
from dst_cli.rundir import DirOrigin, RunDir, refuse_unwritable
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


@pytest.mark.parametrize("where", ["new nested dir", "user folder", "dot"])
def test_a_run_that_fails_in_its_dir_removes_only_what_it_created(tmp_path, monkeypatch, capsys, where):
    """Hydra creates the run dir and train.log before the run starts; a run refused there (no dataset files)
    removes what it made, and leaves a folder that existed, with its files, as it was."""
    from dst_cli.cli import main

    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if where != "new nested dir":
        (folder / "notes.txt").write_text("keep")
    run_dir = {"new nested dir": "outputs/runs/one", "user folder": str(folder), "dot": "."}[where]
    with pytest.raises(SystemExit) as exit:
        main(["experiment=quickstart", "dataset=cifar10", f"dataset.root={tmp_path / 'none'}",
              "dataset.download=false", f"hydra.run.dir={run_dir}"])
    assert exit.value.code == 2 and "files not found" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ([] if where == "new nested dir" else ["notes.txt"])


def test_an_unwritable_run_dir_is_refused_in_one_line_before_hydra_creates_it(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit:
        refuse_unwritable(tmp_path / "file" / "run", "hydra.run.dir")
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
