"""The config schema, derived from the code it configures: each default, type and range is written once.

- The sparse options (sparsity, distribution, dense_first_layer, dense_last_layer, seed) are sparsify()'s
  keywords: their defaults and types come from its signature, their ranges from dst_cli.sparse.check_layout.
- trainer.* belongs to the runner: TrainerConfig below declares each key's default, allowed values and help.
- Every group (model, dataset, acq, schedule, init, optim, lr_schedule, logger) is a `_target_` node whose
  options are derived from the callables' signatures (dst_cli.plugins.signature_node) with their preset's
  overrides (a schedule preset, an optimizer's recipe), and registered in Hydra's ConfigStore on import.
  `method` options are derived from dst_cli.methods; `experiment` and `sparsity_level` are YAML presets.
conf/train.yaml picks each group's default option and sets the papers' sparsity.
"""
import inspect
import types
import typing
from dataclasses import MISSING as NO_FACTORY, dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dst_cli.checks import (
    BOOLEAN, FRACTION, Check, annotation_check, auto_or, closest, either, number_range, one_of, shown,
)
from dst_cli.errors import UserError
from dst_cli.plugins import annotations, import_object, locate, parameters, signature_node

DEVICES = ("auto", "cpu", "cuda")
PROGRESS_MODES = ("auto", "bar", "log", "none")
COMPILE_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes besides its default
MAX_SEED = 2**63 - 1

# Dotted keys that may change on resume and that reports ignore when grouping runs: they cannot change a
# run's result ("logger" and "hydra" cover everything below them).
RESULT_NEUTRAL_KEYS = (
    "trainer.progress", "trainer.device", "trainer.checkpoint", "trainer.eval_batch_size", "trainer.compile",
    "trainer.threads", "dataset.root", "dataset.num_workers", "dataset.pipeline", "dataset.download", "logger",
    "hydra", "backend",  # backend: the same masks and choices; only the order of the sums differs
)


def key(default: Any, check: Check, help: str) -> Any:
    """A runner key: its default, allowed values and one-line help."""
    return field(default=default, metadata={"check": check, "help": help})


@dataclass
class TrainerConfig:
    epochs: int = key(160, number_range(1, integer=True), "training epochs")
    batch_size: int = key(128, number_range(1, integer=True), "training batch size per process")
    eval_batch_size: int = key(512, number_range(1, integer=True),
                               "batch size of the val / test passes (no effect on results)")
    label_smoothing: float = key(0.0, FRACTION, "label smoothing of the training cross-entropy loss")
    device: str = key("auto", one_of(*DEVICES), "auto picks cuda when present")
    threads: Any = key("auto", auto_or(number_range(1, integer=True)),
                       "torch CPU threads; auto = OMP_NUM_THREADS if set, else the physical cores available")
    checkpoint: bool = key(True, BOOLEAN, "write checkpoints/last.pt every epoch and best.pt on a new best")
    progress: str = key("auto", one_of(*PROGRESS_MODES), "auto: a progress bar on a terminal, log lines otherwise")
    bf16: Any = key("auto", auto_or(BOOLEAN), "bf16 autocast; auto: on for CUDA, off for CPU")
    channels_last: Any = key("auto", auto_or(BOOLEAN), "channels_last memory format; auto: on for CUDA")
    compile: Any = key("auto", auto_or(either(BOOLEAN, one_of(*COMPILE_MODES))),
                       "torch.compile the model; auto: reduce-overhead (CUDA graphs; a 98% VGG-19 epoch 1.9 s vs "
                       "3.4-3.9 s eager on an H200) on one CUDA device, eager on CPU and under DDP; true: "
                       "torch.compile's default mode")


# sparsify's keywords that are top-level config keys, with their help (defaults and types: its signature)
SPARSE_KEYS = {
    "sparsity": "share of prunable (conv + linear) weights that are zero",
    "distribution": "how the sparsity is spread over the layers",
    "dense_first_layer": "keep the first prunable layer dense; null: the distribution's convention (uniform: "
                         "yes, as RigL; erk / er: no)",
    "dense_last_layer": "keep the last prunable layer (the classifier) dense; null: no",
    "seed": "seed of the weights, masks and batch order",
    "backend": "how sparse layers compute: masked (dense kernels x masks, any device), sparse (forward and "
               "backward on the active weights only: CPU, 2-2.6x faster at 98%), auto (per layer the faster)",
}

# What the runner passes each group's callable itself, by parameter name (not config keys).
GROUP_OFFERS = {
    "model": ("num_classes", "input_shape"),
    "dataset": ("settings",),
    "acq": (),
    "schedule": ("total_steps",),
    "init": (),
    "optim": ("params",),
    "lr_schedule": ("epochs", "steps_per_epoch"),
    "logger": (),
}
PLUGIN_GROUPS = tuple(GROUP_OFFERS)
GROUP_HELP = {
    "model": "the network: any nn.Module class or factory (model._target_=...)",
    "dataset": "the data: a builder of fast loaders, or any callable returning torch Datasets",
    "acq": "the acquisition function: what each mask update drops and grows",
    "schedule": "when and how much the topology changes (a preset of the schedule.* keys)",
    "init": "the initial topology: random, or scored on training batches",
    "optim": "the optimizer: a preset, or any torch.optim class (optim._target_=...)",
    "lr_schedule": "the learning rate over training (a factor of optim.lr at each step)",
    "logger": "where metrics go besides metrics.jsonl; several at once: logger=[a,b]",
    "method": "a row of the papers' tables: acq, schedule and init at once (method=granet)",
    "experiment": "a preset setting many keys at once (its file's header gives its source)",
    "sparsity_level": "a sparsity column of the paper table (experiment=dstee_table)",
}


def config_type(annotation: Any) -> Any:
    """The type OmegaConf can hold for a Python annotation (it refuses a value of another type on compose)."""
    if annotation in (int, float, bool, str):
        return annotation
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return str
    others = [argument for argument in arguments if argument is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(others) == 1:
        inner = config_type(others[0])
        return Optional[inner] if inner is not Any else Any
    return Any


def sparsify_parameters() -> dict[str, tuple[Any, Any]]:
    """name -> (annotation, default) of sparsify's keywords that are config keys."""
    from dst_cli.sparse import sparsify

    hints, found = annotations(sparsify), parameters(sparsify)
    return {name: (hints.get(name, Any), found[name].default) for name in SPARSE_KEYS}


def make_train_config() -> type:
    """TrainConfig: the sparse options (from sparsify), trainer, and the group nodes."""
    sparse = []
    for name, (annotation, default) in sparsify_parameters().items():
        value = MISSING if default is inspect.Parameter.empty else default
        sparse.append((name, config_type(annotation), field(default=value, metadata={
            "check": annotation_check(annotation), "help": SPARSE_KEYS[name]})))
    groups = [(group, Any, field(default=MISSING, metadata={"help": GROUP_HELP[group]}))
              for group in PLUGIN_GROUPS if group != "logger"]
    return make_dataclass("TrainConfig", [
        *sparse,
        ("trainer", TrainerConfig, field(default_factory=TrainerConfig, metadata={"help": "the training loop"})),
        *groups,
        ("logger", dict[str, Any], field(default_factory=dict, metadata={"help": GROUP_HELP["logger"]})),
    ])


TrainConfig = make_train_config()


# ----- the group options, derived -----
def option_sources() -> dict[str, dict[str, tuple[Any, dict]]]:
    """group -> option -> (callable or its dotted path, the overrides of its preset)."""
    from dst_cli.data import DATASETS
    from dst_cli.loggers import LOGGERS
    from dst_cli.lr_schedules import LR_SCHEDULES
    from dst_cli.models import MODELS
    from dst_cli.optim import OPTIMIZER_PRESETS
    from dst_cli.sparse import SCHEDULE_PRESETS, UpdateSchedule
    from dst_cli.sparse.acquisition import ACQUISITIONS
    from dst_cli.sparse.init import INITS

    return {
        "model": {name: (path, {}) for name, path in MODELS.items()},
        "dataset": dict(DATASETS),
        "acq": {name: (cls, {}) for name, cls in ACQUISITIONS.classes.items()},
        "schedule": {name: (UpdateSchedule, preset) for name, preset in SCHEDULE_PRESETS.items()},
        "init": {name: (cls, {}) for name, cls in INITS.classes.items()},
        "optim": dict(OPTIMIZER_PRESETS),
        "lr_schedule": {name: (cls, {}) for name, cls in LR_SCHEDULES.items()},
        "logger": {name: (cls, {}) for name, cls in LOGGERS.items()},
    }


def option_node(group: str, target: Any, overrides: dict | None = None) -> dict:
    """A group option's node; `target` is the callable or its dotted path (which then names it)."""
    if isinstance(target, str):
        return signature_node(import_object(target), GROUP_OFFERS[group], overrides, path=target)
    return signature_node(target, GROUP_OFFERS[group], overrides)


def option_package(group: str, name: str) -> str:
    """Loggers sit side by side under logger.<name>, so that several can be chosen at once."""
    return f"logger.{name}" if group == "logger" else group


def nested(dotted: dict) -> dict:
    """{"schedule.regrow_dropped": False} -> {"schedule": {"regrow_dropped": False}}."""
    tree: dict = {}
    for dotted_key, value in dotted.items():
        *parents, leaf = dotted_key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def flattened(tree: dict, prefix: str = "") -> dict:
    """{"acq": {"c": 1}} -> {"acq.c": 1}; lists and empty mappings stay values (the inverse of `nested`)."""
    leaves = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            leaves.update(flattened(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def method_node(method) -> dict:
    from dst_cli.methods import method_sets

    overrides = [{"override /acq": method.acq}, {"override /schedule": method.schedule},
                 {"override /init": method.init}]
    return {"defaults": overrides, **nested(method_sets(method))}


def register_schema() -> None:
    """Put the schema, every group option and the methods into Hydra's ConfigStore (on import)."""
    from dst_cli.methods import METHODS

    store = ConfigStore.instance()
    store.store(name="base_train", node=TrainConfig)
    for group, options in option_sources().items():
        for name, (target, overrides) in options.items():
            store.store(group=group, name=name, node=option_node(group, target, overrides),
                        package=option_package(group, name))
    store.store(group="logger", name="none", node={}, package="logger")
    for method in METHODS:
        store.store(group="method", name=method.name, node=method_node(method), package="_global_")


def register_target(group: str, path: str) -> str:
    """`GROUP._target_=path` given without a GROUP option: an option named `path`, derived from its signature,
    so that the node holds the callable's own arguments (not those of the default option). Returns its name."""
    node = signature_node(locate(group, path), GROUP_OFFERS[group], path=path)
    ConfigStore.instance().store(group=group, name=path, node=node, package=option_package(group, path))
    return path


register_schema()


# ----- checks of the composed config -----
def schema_fields(schema: type) -> dict[str, Any]:
    return {f.name: f for f in fields(schema)}


def describe_keys(schema: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str, Any]]:
    """(dotted key, allowed values, help, default) of every schema key except the group nodes."""
    rows = []
    for name, spec in schema_fields(schema).items():
        if name in PLUGIN_GROUPS:
            continue
        nested_default = spec.default_factory() if spec.default_factory is not NO_FACTORY else None
        if is_dataclass(nested_default):
            rows += describe_keys(type(nested_default), f"{prefix}{name}.")
            continue
        rows.append((f"{prefix}{name}", spec.metadata["check"].allowed, spec.metadata["help"], spec.default))
    return rows


def invalid(dotted: str, value: Any, allowed: str) -> UserError:
    return UserError(f"{dotted}={shown(value)} is invalid; allowed: {allowed}")


def check_trainer(cfg: DictConfig) -> None:
    for name, spec in schema_fields(TrainerConfig).items():
        value = cfg.trainer[name]
        if not spec.metadata["check"].accepts(value):
            raise invalid(f"trainer.{name}", value, spec.metadata["check"].allowed)


def check_config(cfg: DictConfig) -> dict:
    """The runner's keys and the sparse options within their ranges; every group a `_target_` node. Returns
    the sparse options with their conventions resolved (check_layout). Plug-in arguments are checked when
    the run is built."""
    from dst_cli.sparse import SparseConfigError, check_layout

    for node, schema, prefix in ((cfg, TrainConfig, ""), (cfg.trainer, TrainerConfig, "trainer.")):
        known = list(schema_fields(schema))
        for name in node:
            if name not in known and name != "hydra":  # a key added with +KEY=VALUE
                suggestion = closest(name, known)
                hint = f"; did you mean {prefix}{suggestion}?" if suggestion else ""
                raise UserError(f"{prefix}{name} is not a config key{hint}")
    for name in schema_fields(TrainConfig):
        if OmegaConf.is_missing(cfg, name):
            raise UserError(f"{name} is not set; give it as {name}=...")
    check_trainer(cfg)
    try:
        layout = check_layout(**{name: cfg[name] for name in SPARSE_KEYS}, ddp="check")
    except SparseConfigError as error:
        raise UserError(" ".join(str(error).split())) from None
    for group in PLUGIN_GROUPS:
        nodes = cfg[group].items() if group == "logger" else [(group, cfg[group])]
        for name, node in nodes:
            where = f"logger.{name}" if group == "logger" else group
            if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
                raise UserError(f"{where} has no _target_; allowed: a {group} option or {where}._target_=...")
    return layout
