"""Where metrics go besides metrics.jsonl (`logger=tensorboard`, `logger=wandb`, `logger=mlflow`; several at
once: `logger=[tensorboard,wandb]`).

A logger is a `_target_` node under `logger.<name>`. Built (and its package checked) before anything is
written; `start` is called once the run dir is accepted, `log` after every epoch's metrics row, `finish` with
the summary whatever ended the run, and `log_sweep` with the report's files when a sweep has ended (from
dst_cli.callbacks.SweepReport). A resumed run (start(..., resumed=True)) continues the tracker's run of its
run dir. The trackers' own packages are imported only when a run starts.
"""
import importlib.util
import json
import secrets
import time
from pathlib import Path
from typing import Literal

from dst_cli.errors import UserError

PROJECT = "dst-cli"  # W&B project, and MLflow experiment of a run outside a sweep
WANDB_ID_FILE = "dst-cli-run-id"  # in the wandb/ folder of a run dir (or sweep dir): the W&B run it continues
RUN_DIR_TAG = "dst_cli.run_dir"  # MLflow tag: the run dir a run belongs to
SWEEP_DIR_TAG = "dst_cli.sweep_dir"  # MLflow tag: the sweep dir whose report a run holds
MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}  # any other status: FAILED
MLFLOW_TAG_LENGTH = 5000  # MLflow caps tag values (8000 characters in 3.x); a long error message is cut
MLFLOW_PARAM_LENGTH = 6000


def require(package: str, extra: str, logger: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise UserError(f"logger={logger} needs the {package} package: pip install 'dst-cli[{extra}]'")


class Logger:
    def start(self, run_dir: Path, recipe: dict, resumed: bool) -> None:
        pass

    def log(self, row: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass

    def log_sweep(self, sweep_dir: Path, files: list[Path]) -> None:
        """The files of a finished sweep's report (summary.csv, report.md, the plots)."""


# ----- what every tracker records -----
def sweep_dir_of(run_dir: Path) -> Path | None:
    """The sweep dir when this run is a job of a sweep (`dst-train -m`), else None. Hydra's config of the job
    says so; a run dir outside that sweep dir (a library call after a sweep in the same process) is no job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir).absolute()
    return sweep_dir if Path(run_dir).absolute().is_relative_to(sweep_dir) else None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_numbers(summary: dict) -> dict[str, float]:
    """The summary's figures (final and best accuracy, density, explored, FLOPs ratios, ...) and each layer's
    density and target density (layers/<name>/density)."""
    numbers = {key: value for key, value in summary.items() if is_number(value)}
    for layer, figures in (summary.get("layers") or {}).items():
        numbers.update({f"layers/{layer}/{key}": figures[key] for key in ("density", "target_density")})
    return numbers


def report_table(csv_path: Path):
    """summary.csv as a wandb.Table (one row per run of the sweep)."""
    import csv

    import wandb

    with csv_path.open(newline="") as file:
        rows = list(csv.reader(file))
    return wandb.Table(columns=rows[0], data=rows[1:]) if rows else None


class TensorBoard(Logger):
    """Every metrics.jsonl value as a TensorBoard scalar, in <run dir>/<log_dir> (`tensorboard --logdir`).

    log_dir: the TensorBoard folder, relative to the run dir
    """

    def __init__(self, log_dir: str = "tensorboard"):
        require("tensorboard", "tensorboard", "tensorboard")
        self.log_dir = log_dir
        self.writer = None

    def start(self, run_dir: Path, recipe: dict, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / self.log_dir))

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])

    def finish(self, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close()


class WandB(Logger):
    """A Weights & Biases run per run dir: every metrics.jsonl value at step = epoch, the recipe and the run dir
    as its config, the summary (per-layer densities too) as its summary; a sweep's runs share a group (the sweep
    dir's name) and the sweep's plots go to a report run of that group. Offline by default: the run's files are
    in <run dir>/wandb/, uploaded later by `wandb sync <run dir>/wandb`.

    project: the W&B project
    entity: the W&B user or team (null: the account's default)
    mode: offline (files only), online (needs `wandb login`) or disabled
    group: the group of the run (null: the sweep dir's name in a sweep, none for a single run)
    tags: tags of the run
    """

    def __init__(self, project: str = PROJECT, entity: str | None = None,
                 mode: Literal["offline", "online", "disabled"] = "offline", group: str | None = None,
                 tags: tuple[str, ...] = ()):
        require("wandb", "wandb", "wandb")
        self.project, self.entity, self.mode, self.group, self.tags = project, entity, mode, group, tuple(tags)
        self.run = None

    def start(self, run_dir: Path, recipe: dict, resumed: bool) -> None:
        sweep_dir = sweep_dir_of(run_dir)
        self.run = self.init(run_dir, resumed, name=run_dir.name, job_type="train",
                             group=self.group or (sweep_dir.name if sweep_dir else None),
                             config={**recipe, "run_dir": str(run_dir)})

    def log(self, row: dict) -> None:
        self.run.log(row, step=row["epoch"])

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        import wandb

        self.run.summary.update({key: value for key, value in summary.items() if key != "recipe"})
        layers = summary.get("layers") or {}
        if layers:  # a table W&B can chart, in the row of the last epoch
            self.run.log({"mask/layers": wandb.Table(
                columns=["layer", "density", "target_density", "numel"],
                data=[[name, figures["density"], figures["target_density"], figures["numel"]]
                      for name, figures in layers.items()])}, step=summary.get("epochs_completed") or 0)
        self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        self.run = None

    def log_sweep(self, sweep_dir: Path, files: list[Path]) -> None:
        """The plots as images and summary.csv as a table, in the run "<sweep> report" of the sweep's group."""
        import wandb

        run = self.init(sweep_dir, resumed=True, name=f"{sweep_dir.name} report", job_type="sweep-report",
                        group=self.group or sweep_dir.name, config={"sweep_dir": str(sweep_dir)})
        media = {f"sweep/{path.stem}": wandb.Image(str(path)) for path in files if path.suffix == ".png"}
        csv_file = next((path for path in files if path.name == "summary.csv"), None)
        table = report_table(csv_file) if csv_file else None
        if table is not None:
            media["sweep/summary"] = table
        run.log(media)
        run.finish()

    def init(self, folder: Path, resumed: bool, **options):
        """A W&B run whose files go to <folder>/wandb/; the run of the folder's id file when `resumed`."""
        import wandb

        try:
            return wandb.init(
                project=self.project, entity=self.entity, mode=self.mode, tags=list(self.tags), dir=str(folder),
                id=wandb_run_id(folder, resumed), resume="allow",
                reinit="create_new",  # a run of its own, whatever other W&B runs this process has
                # train.log has the output, and dst-train's summary ends the run (not W&B's, per run of a sweep)
                settings=wandb.Settings(console="off", quiet=True),
                **options)
        except Exception as error:  # not logged in, no network online, a bad entity: one line
            raise UserError(f"logger=wandb could not start its run: {type(error).__name__}: "
                            f"{' '.join(str(error).split())}") from None


def wandb_run_id(folder: Path, resumed: bool) -> str:
    """The id of the W&B run of `folder`: the one recorded in <folder>/wandb/ when resuming, else a new one
    (recorded). Not derived from the path, so that a new run in a reused dir does not append to the old run."""
    id_file = folder / "wandb" / WANDB_ID_FILE
    if resumed and id_file.is_file():
        return id_file.read_text().strip()
    run_id = secrets.token_hex(6)
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id + "\n")
    return run_id


class MLflow(Logger):
    """An MLflow run per run dir: every metrics.jsonl value at step = epoch, the recipe as params (dotted keys),
    the summary's figures (per-layer densities too) as metrics and its strings as tags, the run dir as tag
    dst_cli.run_dir; a sweep's runs go to an experiment named after the sweep dir, with a report run that
    holds summary.csv, report.md and the plots as artifacts. `mlflow ui` in the current dir shows them.

    tracking_uri: where runs go: sqlite:///mlflow.db (a file in the current dir), a server http://host:5000,
      or a folder (MLflow's file store); relative paths are resolved against the current dir
    experiment: the experiment (null: the sweep dir's name in a sweep, else dst-cli)
    """

    def __init__(self, tracking_uri: str = "sqlite:///mlflow.db", experiment: str | None = None):
        require("mlflow", "mlflow", "mlflow")
        self.tracking_uri = absolute_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.client = None
        self.run_id: str | None = None

    def start(self, run_dir: Path, recipe: dict, resumed: bool) -> None:
        from mlflow.entities import Param

        from dst_cli.schema import flattened

        sweep_dir = sweep_dir_of(run_dir)
        self.client = self.connect()
        try:
            experiment_id = self.experiment_id(self.experiment or (sweep_dir.name if sweep_dir else PROJECT))
            self.run_id = self.run_of(experiment_id, RUN_DIR_TAG, str(run_dir), run_dir.name, resumed)
            logged = self.client.get_run(self.run_id).data.params  # a resumed run has them (they cannot change)
            params = [Param(key, param_value(value)) for key, value in flattened(recipe).items() if key not in logged]
            self.client.log_batch(self.run_id, params=params)
        except Exception as error:  # a server that does not answer, a deleted experiment of that name: one line
            raise UserError(f"logger=mlflow could not start its run in {self.tracking_uri}: {type(error).__name__}: "
                            f"{' '.join(str(error).split())}") from None

    def log(self, row: dict) -> None:
        self.log_metrics({key: value for key, value in row.items() if key != "epoch"}, row["epoch"])

    def finish(self, summary: dict) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        from dst_cli.schema import flattened

        self.log_metrics(summary_numbers(summary), summary.get("epochs_completed") or 0)
        tags = {key: value for key, value in flattened(summary).items()
                if isinstance(value, str) and not key.startswith("recipe.")}
        tags["overrides"] = " ".join(summary.get("overrides") or [])
        self.client.log_batch(self.run_id, tags=[RunTag(key, value[:MLFLOW_TAG_LENGTH]) for key, value in tags.items()])
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(summary.get("status"), "FAILED"))
        self.run_id = None

    def log_sweep(self, sweep_dir: Path, files: list[Path]) -> None:
        """The report's files as artifacts of the run "<sweep> report" in the sweep's experiment."""
        self.client = self.connect()
        experiment_id = self.experiment_id(self.experiment or sweep_dir.name)
        run_id = self.run_of(experiment_id, SWEEP_DIR_TAG, str(sweep_dir), f"{sweep_dir.name} report", resumed=True)
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")

    def connect(self):
        from mlflow import MlflowClient

        try:
            return MlflowClient(tracking_uri=self.tracking_uri)
        except Exception as error:  # MLflow 3 refuses a file store without MLFLOW_ALLOW_FILE_STORE=true
            raise UserError(f"logger.mlflow.tracking_uri={self.tracking_uri} cannot be used: "
                            f"{' '.join(str(error).split())}") from None

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created if needed (by whichever job of a sweep comes first)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another job created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def run_of(self, experiment_id: str, tag: str, value: str, name: str, resumed: bool) -> str:
        """The id of the latest run tagged `tag`=`value` when resuming (running again), else of a new run."""
        if resumed:
            runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = {quoted(value)}",
                                           order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                self.client.update_run(runs[0].info.run_id, status="RUNNING")
                return runs[0].info.run_id
        return self.client.create_run(experiment_id, run_name=name, tags={tag: value}).info.run_id

    def log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items() if is_number(value)]
        self.client.log_batch(self.run_id, metrics=metrics)


def absolute_tracking_uri(uri: str) -> str:
    """A relative sqlite file or folder made absolute against the current dir (jobs of a sweep may run
    elsewhere); any other URI as given."""
    sqlite = "sqlite:///"
    if uri.startswith(sqlite):
        return sqlite + str(Path(uri.removeprefix(sqlite)).absolute())
    if "://" in uri or uri.startswith("file:") or uri.startswith("databricks"):
        return uri
    return Path(uri).absolute().as_uri()


def param_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MLFLOW_PARAM_LENGTH]


def quoted(value: str) -> str:
    """A value in an MLflow search filter, in the quotes it does not contain (MLflow's filter has no escapes)."""
    return f"'{value}'" if '"' in value else f'"{value}"'


LOGGERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}
