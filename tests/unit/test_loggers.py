"""logger=wandb and logger=mlflow: a tiny run's metrics, recipe and summary read back with the trackers' own
formats and APIs (W&B: the offline run's .wandb file; MLflow: MlflowClient on a SQLite store), resume into the
same tracker run, sweep grouping and the sweep report, and the one line for a missing package. No network."""
import json
import struct
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import train_interrupted_after_first_epoch
from dst_cli.build import check_run, train
from dst_cli.callbacks import log_report
from dst_cli.errors import UserError
from dst_cli.loggers import MLflow, WandB

pytest.importorskip("wandb")
pytest.importorskip("mlflow")

WANDB_OWN_KEYS = ("_step", "_runtime", "_timestamp", "_wandb")
LEVELDB_BLOCK = 32768  # a .wandb file is a LevelDB log: blocks of chunks, each a 7-byte header and data
WANDB_FILE_HEADER = b":W&B\xe1\xbe\x00"
FULL, LAST = 1, 4  # chunk types that end a record
WANDB_WRITE_WAIT_S = 20


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """One SQLite store for the module (creating its tables takes seconds); each test has its own run dirs."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """W&B offline, quiet and writing nothing outside tmp_path; the current dir (MLflow's artifacts) in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))


def mlflow_override(db: Path) -> tuple[str, str]:
    return "logger=mlflow", f"logger.mlflow.tracking_uri='sqlite:///{db}'"


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----- reading W&B's offline files -----
def wandb_records(path: Path):
    """The protobuf Records of a .wandb file."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data.startswith(WANDB_FILE_HEADER)
    offset, pieces = len(WANDB_FILE_HEADER), b""
    while offset + 7 <= len(data):
        if LEVELDB_BLOCK - offset % LEVELDB_BLOCK < 7:  # a block's tail too short for a header is padding
            offset += LEVELDB_BLOCK - offset % LEVELDB_BLOCK
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if offset + 7 + length > len(data):  # still being written
            return
        pieces += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(pieces)
            yield record
            pieces = b""


def items(entries) -> dict:
    """{key: value} of a record's items; an item with a nested key (a logged table's fields) nested back."""
    tree: dict = {}
    for entry in entries:
        *parents, leaf = list(entry.nested_key) or [entry.key]
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = json.loads(entry.value_json)
    return tree


def read_wandb_run(path: Path) -> dict:
    """id, group, name, config, history rows (without W&B's own keys) and summary of one .wandb file, once it
    is complete: run.finish() may return before W&B's service has written the file."""
    deadline = time.monotonic() + WANDB_WRITE_WAIT_S
    run = read_wandb_file(path)
    while not run["exited"] and time.monotonic() < deadline:
        time.sleep(0.05)
        run = read_wandb_file(path)
    assert run["exited"], f"{path} has no exit record after {WANDB_WRITE_WAIT_S} s"
    return run


def read_wandb_file(path: Path) -> dict:
    run = {"config": {}, "history": [], "summary": {}, "exited": False}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, group=record.run.run_group, name=record.run.display_name)
            run["config"].update(items(record.run.config.update))
        elif kind == "config":
            run["config"].update(items(record.config.update))
        elif kind == "history":
            row = items(record.history.item)
            run["history"].append({key: value for key, value in row.items() if key not in WANDB_OWN_KEYS})
        elif kind == "summary":
            run["summary"].update(items(record.summary.update))
        elif kind == "exit":
            run["exited"] = True
    run["config"].pop("_wandb", None)
    return run


def wandb_runs(folder: Path) -> list[dict]:
    """The W&B runs written under <folder>/wandb, oldest first (a resumed run has one file per start)."""
    return [read_wandb_run(path) for path in sorted((folder / "wandb").glob("offline-run-*/run-*.wandb"))]


def without_layer_table(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "mask/layers"} for row in rows]


# ----- reading MLflow's store -----
def mlflow_client(db: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def mlflow_runs_of(db: Path, run_dir: Path, experiment: str = "dst-cli") -> list:
    client = mlflow_client(db)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    return client.search_runs([found.experiment_id], filter_string=f"tags.`dst_cli.run_dir` = '{run_dir}'")


def mlflow_history(db: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    history = mlflow_client(db).get_metric_history(run_id, key)
    return [(metric.step, metric.value) for metric in sorted(history, key=lambda m: (m.step, m.timestamp))]


def assert_mlflow_history_is(db: Path, run_id: str, rows: list[dict]) -> None:
    for key in rows[0]:
        if key != "epoch":
            assert mlflow_history(db, run_id, key) == [(row["epoch"], row[key]) for row in rows], key


# ----- the tests -----
@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_a_missing_package_is_one_line_naming_the_extra(make_cfg, tiny_overrides, monkeypatch, logger):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == logger else find_spec(name, *a))
    with pytest.raises(UserError, match=rf"^logger={logger} needs the {logger} package: "
                                        rf"pip install 'dst-cli\[{logger}\]'$"):
        check_run(make_cfg(*tiny_overrides, f"logger={logger}"))


def test_wandb_offline_run_holds_every_metric_the_recipe_and_the_summary(make_cfg, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    summary = train(make_cfg(*tiny_overrides, "logger=wandb"), run_dir)

    (run,) = wandb_runs(run_dir)
    assert without_layer_table(run["history"]) == metrics(run_dir)
    assert "mask/layers" in run["history"][-1]  # the per-layer table, in the last epoch's row
    assert run["config"] == {**summary["recipe"], "run_dir": str(run_dir)}
    assert run["group"] == "" and run["name"] == "run"  # no sweep: no group
    for key in ("status", "best_test_acc", "final_test_acc", "density", "explored", "train_flops_ratio", "layers"):
        assert run["summary"][key] == summary[key], key
    assert run["summary"]["layers"]["3.weight"]["density"] == summary["layers"]["3.weight"]["density"]


def test_mlflow_run_holds_every_metric_the_recipe_and_the_summary(make_cfg, tiny_overrides, tmp_path, mlflow_db):
    run_dir = tmp_path / "run"
    summary = train(make_cfg(*tiny_overrides, *mlflow_override(mlflow_db)), run_dir)

    (run,) = mlflow_runs_of(mlflow_db, run_dir)
    assert_mlflow_history_is(mlflow_db, run.info.run_id, metrics(run_dir))
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["trainer.epochs"] == "2" and run.data.params["sparsity"] == "0.9"
    assert run.data.params["acq._target_"] == summary["recipe"]["acq"]["_target_"]
    assert run.data.metrics["best_test_acc"] == summary["best_test_acc"]
    assert run.data.metrics["layers/3.weight/density"] == summary["layers"]["3.weight"]["density"]
    assert run.data.metrics["layers/3.weight/target_density"] == summary["layers"]["3.weight"]["target_density"]
    assert run.data.tags["status"] == "completed" and run.data.tags["method"] == summary["method"]
    assert run.data.tags["versions.torch"] == summary["versions"]["torch"]


def test_an_interrupted_run_resumed_continues_the_same_tracker_runs(make_cfg, tiny_overrides, tmp_path, mlflow_db,
                                                                    monkeypatch):
    run_dir = tmp_path / "run"
    overrides = (*tiny_overrides, "logger=[wandb,mlflow]", f"logger.mlflow.tracking_uri='sqlite:///{mlflow_db}'")
    train_interrupted_after_first_epoch(make_cfg(*overrides), run_dir, monkeypatch)
    (interrupted,) = mlflow_runs_of(mlflow_db, run_dir)
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["status"] == "interrupted"

    train(make_cfg(*overrides), run_dir)

    first, second = wandb_runs(run_dir)  # W&B offline: one file per start, one run id (`wandb sync` joins them)
    assert first["id"] == second["id"]
    assert without_layer_table(first["history"] + second["history"]) == metrics(run_dir)
    assert [row["epoch"] for row in metrics(run_dir)] == [1, 2]
    assert second["summary"]["status"] == "completed"
    (resumed,) = mlflow_runs_of(mlflow_db, run_dir)
    assert resumed.info.run_id == interrupted.info.run_id and resumed.info.status == "FINISHED"
    assert_mlflow_history_is(mlflow_db, resumed.info.run_id, metrics(run_dir))


ROW = {"epoch": 1, "step": 10, "lr": 0.1, "train/loss": 2.0, "test/acc": 0.5, "mask/density": 0.1}
SUMMARY = {"status": "completed", "error": None, "best_test_acc": 0.75, "epochs_completed": 3,
           "layers": {"fc.weight": {"shape": [2, 2], "numel": 4, "active": 1, "target_density": 0.25, "density": 0.25}},
           "overrides": ["seed=1"], "recipe": {"seed": 1}}


def rows(*epochs: int) -> list[dict]:
    return [{**ROW, "epoch": epoch, "test/acc": epoch / 10} for epoch in epochs]


@pytest.mark.parametrize("make_logger", [lambda db: WandB(), lambda db: MLflow(tracking_uri=f"sqlite:///{db}")],
                         ids=["wandb", "mlflow"])
def test_a_row_logged_again_after_a_resume_is_taken(tmp_path, mlflow_db, make_logger):
    """A run killed between its metrics row and its checkpoint logs that epoch again when it resumes."""
    run_dir = tmp_path / "run"
    logger = make_logger(mlflow_db)
    logger.start(run_dir, {"seed": 1}, resumed=False)
    for row in rows(1, 2):
        logger.log(row)
    logger.finish({**SUMMARY, "status": "interrupted", "epochs_completed": 2})
    logger = make_logger(mlflow_db)
    logger.start(run_dir, {"seed": 1}, resumed=True)
    for row in rows(2, 3):
        logger.log(row)
    logger.finish(SUMMARY)

    if isinstance(logger, WandB):
        first, second = wandb_runs(run_dir)
        assert first["id"] == second["id"]
        assert [row["epoch"] for row in first["history"] + second["history"]] == [1, 2, 2, 3]
    else:
        (run,) = mlflow_runs_of(mlflow_db, run_dir)
        assert mlflow_history(mlflow_db, run.info.run_id, "test/acc") == [(1, 0.1), (2, 0.2), (2, 0.2), (3, 0.3)]
        assert run.info.status == "FINISHED"


def test_a_new_run_in_a_reused_run_dir_is_a_new_tracker_run(tmp_path, mlflow_db):
    run_dir = tmp_path / "run"
    for _ in range(2):
        for logger in (WandB(), MLflow(tracking_uri=f"sqlite:///{mlflow_db}")):
            logger.start(run_dir, {"seed": 1}, resumed=False)
            logger.log(ROW)
            logger.finish(SUMMARY)
    assert len({run["id"] for run in wandb_runs(run_dir)}) == 2
    assert len(mlflow_runs_of(mlflow_db, run_dir)) == 2


def test_a_sweeps_runs_share_a_group_and_its_report_is_logged(tmp_path, mlflow_db, monkeypatch):
    from PIL import Image

    sweep_dir = tmp_path / "my-sweep"
    hydra = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep_dir)}}})
    monkeypatch.setattr(HydraConfig.instance(), "cfg", hydra)  # as in a job of `dst-train -m`
    tracking_uri = f"sqlite:///{mlflow_db}"
    nodes = OmegaConf.create({"wandb": {"_target_": "dst_cli.loggers.WandB"},
                              "mlflow": {"_target_": "dst_cli.loggers.MLflow", "tracking_uri": tracking_uri}})
    for job in ("0", "1"):
        for logger in (WandB(), MLflow(tracking_uri=tracking_uri)):
            logger.start(sweep_dir / job, {"seed": int(job)}, resumed=False)
            logger.log(ROW)
            logger.finish(SUMMARY)
    sweep_dir.joinpath("summary.csv").write_text("run_dir,best_test_acc\n0,0.5\n1,0.6\n")
    sweep_dir.joinpath("report.md").write_text("# report\n")
    Image.new("RGB", (8, 8)).save(sweep_dir / "acc_vs_sparsity.png")

    log_report(nodes, sweep_dir)

    assert [run["group"] for job in ("0", "1") for run in wandb_runs(sweep_dir / job)] == ["my-sweep", "my-sweep"]
    (report,) = wandb_runs(sweep_dir)
    assert report["group"] == "my-sweep" and report["name"] == "my-sweep report"
    assert report["history"][0]["sweep/acc_vs_sparsity"]["_type"] == "image-file"
    assert report["history"][0]["sweep/summary"]["_type"] == "table-file"
    for job in ("0", "1"):
        assert len(mlflow_runs_of(mlflow_db, sweep_dir / job, experiment="my-sweep")) == 1
    client = mlflow_client(mlflow_db)
    experiment = client.get_experiment_by_name("my-sweep")
    (report_run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`dst_cli.sweep_dir` != ''")
    artifacts = {artifact.path for artifact in client.list_artifacts(report_run.info.run_id)}
    assert artifacts == {"summary.csv", "report.md", "acc_vs_sparsity.png"}


def test_a_logger_that_cannot_log_the_report_is_a_warning(tmp_path, caplog):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    sweep_dir.joinpath("report.md").write_text("# report\n")
    nodes = OmegaConf.create({"mlflow": {"_target_": "dst_cli.loggers.MLflow", "tracking_uri": "no-such-scheme://x"}})
    log_report(nodes, sweep_dir)
    assert "logger=mlflow could not log the sweep report" in caplog.text


@pytest.mark.slow
def test_dst_train_sweep_with_wandb_and_mlflow_end_to_end(tmp_path):
    """`dst-train -m ... logger=[wandb,mlflow]` as a user runs it: each job's tracker run is in the sweep's
    group / experiment and equals its metrics.jsonl, and the report's files are logged when the sweep ends."""
    import os
    import subprocess
    import sys

    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "dst_cli", "-m", "experiment=quickstart", "trainer.epochs=2",
               "trainer.progress=none", "schedule.update_interval=5", "seed=0,1", "logger=[wandb,mlflow]",
               f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    db = tmp_path / "mlflow.db"  # the default tracking_uri, in the current dir
    for job in ("0", "1"):
        run_dir = sweep_dir / job
        (wandb_run,) = wandb_runs(run_dir)
        assert wandb_run["group"] == "sweep" and without_layer_table(wandb_run["history"]) == metrics(run_dir)
        (mlflow_run,) = mlflow_runs_of(db, run_dir, experiment="sweep")
        assert_mlflow_history_is(db, mlflow_run.info.run_id, metrics(run_dir))
    (report,) = wandb_runs(sweep_dir)
    assert {"sweep/acc_vs_sparsity", "sweep/test_acc_curves", "sweep/summary"} <= set(report["history"][0])
    client = mlflow_client(db)
    (report_run,) = client.search_runs([client.get_experiment_by_name("sweep").experiment_id],
                                       filter_string="tags.`dst_cli.sweep_dir` != ''")
    artifacts = {artifact.path for artifact in client.list_artifacts(report_run.info.run_id)}
    assert {"summary.csv", "report.md", "acc_vs_sparsity.png", "test_acc_curves.png"} <= artifacts
