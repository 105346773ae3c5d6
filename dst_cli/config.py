"""The typed config schema: one place for every key's type, allowed values, default and one-line help.

The dataclasses below are Hydra structured configs registered in the ConfigStore; conf/train.yaml and the
group files extend them through their defaults lists (`- base_train`, `- base_schedule`, ...), so Hydra
refuses a value of the wrong type while composing. `check_config` then checks ranges and unknown keys once,
before anything is written. `model`, `dataset` and `acq` are plug-in nodes: `_target_` names any importable
callable and the node's other keys are its own keyword arguments (checked when the run is built).

This module imports neither torch nor dst_cli.sparse (dst-train --help renders it without torch); the
tuples of allowed names that mirror the library are compared with it by tests/unit/test_config.py.
"""
import importlib
import inspect
import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING as NO_FACTORY, dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from dst_cli.errors import UserError

DISTRIBUTIONS = ("erk", "er", "uniform")  # = dst_cli.sparse.DISTRIBUTIONS
SCHEDULE_PRESETS = ("rigl", "itop", "gradual")  # = the keys of dst_cli.sparse.SCHEDULE_PRESETS
INIT_METHODS = ("random", "snip", "grasp", "synflow")  # = dst_cli.sparse.INIT_METHODS
DECAYS = ("cosine", "linear", "constant")  # = dst_cli.sparse.DECAYS
ROUNDINGS = ("round", "int", "ceil")  # = dst_cli.sparse.ROUNDINGS
DEVICES = ("auto", "cpu", "cuda")
PROGRESS_MODES = ("auto", "bar", "log", "none")
OPTIMIZERS = ("sgd", "adamw")
LOGGERS = ("none", "tensorboard")
PLUGIN_GROUPS = ("model", "dataset", "acq")  # nodes whose keys are a callable's own keyword arguments
MAX_SEED = 2**63 - 1

# Dotted keys that may change on resume and that reports ignore when grouping runs: they cannot change a
# run's result ("logger" and "hydra" cover everything below them).
RESULT_NEUTRAL_KEYS = (
    "trainer.progress", "trainer.device", "trainer.checkpoint", "trainer.eval_batch_size", "trainer.compile",
    "trainer.threads", "dataset.root", "dataset.num_workers", "dataset.pipeline", "dataset.download", "logger",
    "hydra",
)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Check:
    """What values a key allows: `allowed` is the text shown in errors and in --help."""

    allowed: str
    accepts: Callable[[Any], bool]


def number_range(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False,
                 integer: bool = False) -> Check:
    def accepts(value: Any) -> bool:
        if not (is_integer(value) if integer else is_number(value)) or math.isnan(value):
            return False
        return (low < value if low_open else low <= value) and (value < high if high_open else value <= high)

    kind, low_text, high_text = ("an integer", str(low), str(high)) if integer else ("a number", f"{low:g}", f"{high:g}")
    if high == math.inf:
        text = f"{kind} {'>' if low_open else '>='} {low_text}"
    else:
        text = f"{kind} in {'(' if low_open else '['}{low_text}, {high_text}{')' if high_open else ']'}"
    return Check(text, accepts)


def one_of(*choices: Any) -> Check:
    return Check(" | ".join(map(str, choices)), lambda value: isinstance(value, str) and value in choices)


def either(*checks: Check) -> Check:
    """A value any of `checks` accepts."""
    return Check(" | ".join(check.allowed for check in checks), lambda value: any(c.accepts(value) for c in checks))


def auto_or(check: Check) -> Check:
    return either(one_of("auto"), check)


def list_of(check: Check, length: int | None = None) -> Check:
    def accepts(value: Any) -> bool:
        return isinstance(value, (list, tuple, ListConfig)) and (length is None or len(value) == length) and all(
            check.accepts(item) for item in value)

    count = f"{length} " if length is not None else ""
    return Check(f"a list of {count}values, each {check.allowed}", accepts)


BOOLEAN = Check("true | false", lambda value: isinstance(value, bool))
SWITCH = auto_or(BOOLEAN)
PRESET_OR_BOOLEAN = Check("null (the preset's) | true | false", lambda value: value is None or isinstance(value, bool))
CONVENTION_OR_BOOLEAN = Check("null | true | false", lambda value: value is None or isinstance(value, bool))
COMPILE_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes besides its default
COMPILE = either(BOOLEAN, one_of(*COMPILE_MODES))
TEXT = Check("a string", lambda value: isinstance(value, str))
FRACTION = number_range(0.0, 1.0)


def key(default: Any, check: Check, help: str) -> Any:
    """A schema field: its default (MISSING, "???": the group file gives it), allowed values and one-line help."""
    metadata = {"check": check, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def physical_cores() -> int:
    """CPU cores this process may use, counting hyper-threads of one core once (at least 1)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, available // threads_per_core())


def threads_per_core() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list") as file:
            siblings = file.read().strip()
    except OSError:
        return 1
    count = 0
    for part in siblings.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return max(1, count)


@dataclass
class TrainerConfig:
    epochs: int = key(160, number_range(1, integer=True), "training epochs")
    batch_size: int = key(128, number_range(1, integer=True), "training batch size per process")
    eval_batch_size: int = key(512, number_range(1, integer=True),
                               "batch size of the val / test passes (no effect on results)")
    device: str = key("auto", one_of(*DEVICES), "auto picks cuda when present")
    threads: Any = key("auto", auto_or(number_range(1, integer=True)),
                       "torch CPU threads; auto = OMP_NUM_THREADS if set, else the physical cores available")
    checkpoint: bool = key(True, BOOLEAN, "write checkpoints/last.pt every epoch and best.pt on a new best")
    progress: str = key("auto", one_of(*PROGRESS_MODES),
                        "auto: a progress bar on a terminal, log lines otherwise")
    bf16: Any = key("auto", SWITCH, "bf16 autocast; auto: on for CUDA, off for CPU")
    channels_last: Any = key("auto", SWITCH, "channels_last memory format; auto: on for CUDA")
    compile: Any = key(False, COMPILE, "torch.compile the model; true: its default mode; reduce-overhead: "
                       "with CUDA graphs (on an H200, VGG-19 steps 2x faster than eager)")


@dataclass
class ScheduleConfig:
    name: str = key(MISSING, one_of(*SCHEDULE_PRESETS), "the preset these values start from (step order, rounding)")
    update_interval: int = key(MISSING, number_range(1, integer=True), "optimizer steps between mask updates")
    drop_fraction: float = key(MISSING, FRACTION, "share of the active weights replaced at the first update")
    decay: str = key(MISSING, one_of(*DECAYS), "how the drop fraction decays over training")
    min_drop_fraction: float = key(MISSING, FRACTION, "drop fraction at the end (at most schedule.drop_fraction)")
    stop_fraction: float = key(MISSING, FRACTION, "share of training after which the topology freezes")
    # null: the preset's value
    regrow_dropped: Any = key(None, PRESET_OR_BOOLEAN, "weights dropped in an update may be grown back in it")
    skip_optimizer_step_on_update: Any = key(None, PRESET_OR_BOOLEAN,
                                             "an update iteration replaces the optimizer step (RigL TF)")
    update_at_step0: Any = key(None, PRESET_OR_BOOLEAN, "also update before the first optimizer step (RigL TF)")
    update_after_optimizer_step: Any = key(None, PRESET_OR_BOOLEAN,
                                           "the update follows the optimizer step (ITOP) instead of preceding it")
    rounding: Any = key(None, Check(f"null | {' | '.join(ROUNDINGS)}", lambda v: v is None or v in ROUNDINGS),
                        "number dropped = round | int | ceil of drop fraction x active weights")
    initial_density: Any = key(None, Check("null (the preset's) | a number in (0, 1]",
                                           lambda v: v is None or number_range(0.0, 1.0, low_open=True).accepts(v)),
                               "gradual: density at the start, pruned to 1 - sparsity (null: no gradual pruning)")
    prune_start_fraction: Any = key(None, Check("null (the preset's) | a number in [0, 1]",
                                                lambda v: v is None or FRACTION.accepts(v)),
                                    "gradual: share of training where pruning starts")
    prune_end_fraction: Any = key(None, Check("null (the preset's) | a number in [0, 1]",
                                              lambda v: v is None or FRACTION.accepts(v)),
                                  "gradual: share of training where the final density is reached")


@dataclass
class InitConfig:
    name: str = key("random", one_of(*INIT_METHODS), "the starting topology: random, or scored on training batches")
    batches: int = key(1, number_range(1, integer=True), "snip / grasp / synflow: training batches scored")
    iterations: int = key(100, number_range(1, integer=True), "synflow: pruning rounds")
    temperature: float = key(200.0, number_range(0.0, low_open=True), "grasp: temperature T")


@dataclass
class OptimConfig:
    name: str = key(MISSING, one_of(*OPTIMIZERS), "the optimizer")
    lr: float = key(MISSING, number_range(0.0, low_open=True), "peak learning rate")
    weight_decay: float = key(MISSING, number_range(0.0), "L2 weight decay (AdamW: decoupled)")
    milestones: list[float] = key(MISSING, list_of(FRACTION), "fractions of trainer.epochs where lr *= gamma")
    gamma: float = key(MISSING, number_range(0.0, low_open=True), "lr factor at each milestone")
    warmup_epochs: float = key(MISSING, number_range(0.0), "linear lr warm-up from 0 over this many epochs (per step)")
    label_smoothing: float = key(MISSING, FRACTION, "label smoothing of the cross-entropy loss")


@dataclass
class SGDConfig(OptimConfig):
    momentum: float = key(MISSING, FRACTION, "SGD momentum")
    nesterov: bool = key(MISSING, BOOLEAN, "Nesterov momentum (needs momentum > 0)")


@dataclass
class AdamWConfig(OptimConfig):
    betas: list[float] = key(MISSING, list_of(number_range(0.0, 1.0, high_open=True), length=2),
                             "AdamW's two moment decay rates")


@dataclass
class LoggerConfig:
    name: str = key(MISSING, one_of(*LOGGERS), "none: metrics.jsonl and summary.json only")
    log_dir: str = key("tensorboard", TEXT, "TensorBoard folder, relative to the run dir")


@dataclass
class TrainConfig:
    sparsity: float = key(0.98, number_range(0.0, 1.0, high_open=True),
                          "share of prunable (conv + linear) weights that are zero")
    distribution: str = key("erk", one_of(*DISTRIBUTIONS), "how the sparsity is spread over the layers")
    # null: the distribution's convention (uniform keeps the first layer dense, as RigL does; erk / er do not)
    dense_first_layer: Any = key(None, CONVENTION_OR_BOOLEAN,
                                 "keep the first prunable layer dense; null: uniform yes (RigL), erk / er no")
    dense_last_layer: Any = key(None, CONVENTION_OR_BOOLEAN,
                                "keep the last prunable layer (the classifier) dense; null: no")
    seed: int = key(0, number_range(0, MAX_SEED, integer=True), "seed of the weights, masks and batch order")
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata={"help": "the training loop"})
    model: Any = key(MISSING, Check("a config with _target_", lambda v: True),
                     "_target_: any nn.Module class or factory; the other keys are its keyword arguments")
    dataset: Any = key(MISSING, Check("a config with _target_", lambda v: True),
                       "_target_: a callable returning train and test (and val) datasets; other keys: its arguments")
    acq: Any = key(MISSING, Check("a config with name or _target_", lambda v: True),
                   "acquisition function: name (ee, rigl, set, ...) + options, or _target_ + its arguments")
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig,
                                     metadata={"help": "when and how much the topology changes"})
    init: InitConfig = field(default_factory=InitConfig, metadata={"help": "the initial mask"})
    optim: Any = key(MISSING, Check("an optim config", lambda v: True), "optimizer and learning-rate schedule")
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(name="none"),
                                 metadata={"help": "where metrics go besides metrics.jsonl"})


OPTIM_SCHEMAS = {"sgd": SGDConfig, "adamw": AdamWConfig}


def register_schema() -> None:
    """Put the schema into Hydra's ConfigStore (done on import, before any compose)."""
    store = ConfigStore.instance()
    store.store(name="base_train", node=TrainConfig)
    store.store(group="schedule", name="base_schedule", node=ScheduleConfig)
    store.store(group="optim", name="base_sgd", node=SGDConfig)
    store.store(group="optim", name="base_adamw", node=AdamWConfig)
    store.store(group="logger", name="base_logger", node=LoggerConfig)
    store.store(group="init", name="base_init", node=InitConfig)


register_schema()


def schema_fields(schema: type) -> dict[str, Any]:
    return {f.name: f for f in fields(schema)}


def describe_keys(schema: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str, Any]]:
    """(dotted key, allowed values, help, default) of every schema key, for --help and the docs."""
    rows = []
    for name, spec in schema_fields(schema).items():
        nested = spec.default_factory() if spec.default_factory is not NO_FACTORY else None
        if is_dataclass(nested):
            rows += describe_keys(type(nested), f"{prefix}{name}.")
            continue
        default = nested if spec.default_factory is not NO_FACTORY else spec.default
        rows.append((f"{prefix}{name}", spec.metadata["check"].allowed, spec.metadata["help"], default))
    return rows


def shown(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value)
    return str(value).replace(" ", "")


def invalid(dotted: str, value: Any, allowed: str) -> UserError:
    return UserError(f"{dotted}={shown(value)} is invalid; allowed: {allowed}")


def node_schemas(parent: str) -> tuple[type, ...]:
    """The schema(s) of the node at dotted key `parent` ("" = the top); () for plug-in nodes and unknown keys."""
    schemas: tuple[type, ...] = (TrainConfig,)
    for name in parent.split(".") if parent else []:
        if schemas == (TrainConfig,) and name == "optim":
            schemas = tuple(OPTIM_SCHEMAS.values())
            continue
        spec = next((schema_fields(s)[name] for s in schemas if name in schema_fields(s)), None)
        if spec is None or spec.default_factory is NO_FACTORY:
            return ()
        schemas = (type(spec.default_factory()),)
    return schemas


def describe_bad_key(dotted: str, value: Any = None, unknown: bool = False) -> str:
    """One line for a key Hydra refused while composing: not in the config (`unknown`), or of the wrong type."""
    parent, _, name = dotted.rpartition(".")
    if parent.split(".")[0] in PLUGIN_GROUPS:
        return (f"{dotted} is not in this config; a new keyword argument of {parent}._target_ is added with "
                f"+{dotted}=VALUE")
    schemas = node_schemas(parent)
    known = {field_name: spec for schema in schemas for field_name, spec in schema_fields(schema).items()}
    if unknown or name not in known:
        where = f"under {parent}" if parent else "at the top level"
        return f"{dotted} is not a config key; allowed {where}: {', '.join(known)}"
    return str(invalid(dotted, value, known[name].metadata["check"].allowed))


def check_node(node: DictConfig, schema: type, prefix: str) -> None:
    """Each key of `node` is in `schema`, set, and within its range; nested schemas are checked in turn."""
    specs = schema_fields(schema)
    for name in node:
        dotted = f"{prefix}{name}"
        if name not in specs and name != "hydra":
            raise UserError(describe_bad_key(dotted, unknown=True))
    for name, spec in specs.items():
        dotted = f"{prefix}{name}"
        if prefix == "" and name in (*PLUGIN_GROUPS, "optim"):
            continue
        if OmegaConf.is_missing(node, name):
            raise UserError(f"{dotted} is not set; give it as {dotted}=...")
        value = node[name]
        if isinstance(value, DictConfig):
            check_node(value, type(spec.default_factory()), f"{dotted}.")
        elif not spec.metadata["check"].accepts(value):
            raise invalid(dotted, value, spec.metadata["check"].allowed)


def check_plugin_node(group: str, node: Any) -> None:
    """A plug-in node: a mapping with a string `_target_` (acq: or a `name`) and no unset value."""
    if not isinstance(node, DictConfig):
        raise UserError(f"{group}={shown(node)} is invalid; allowed: a config group option or {group}._target_=...")
    target = node.get("_target_")
    if group == "acq" and target is None:
        if not isinstance(node.get("name"), str):
            raise UserError("acq needs a name (acq=ee, rigl, ...) or a class: acq._target_=pkg.module.Class")
    elif not isinstance(target, str) or not target:
        raise UserError(f"{group}._target_ is not set; give the callable as {group}._target_=pkg.module.name")
    for name in node:
        if OmegaConf.is_missing(node, name):
            raise UserError(f"{group}.{name} is not set; give it as {group}.{name}=...")


def check_config(cfg: DictConfig) -> None:
    """Every key known, of its type and in its range (plug-in arguments are checked when the run is built)."""
    check_node(cfg, TrainConfig, "")
    optim_name = cfg.optim.get("name") if isinstance(cfg.optim, DictConfig) else None
    if optim_name not in OPTIM_SCHEMAS:
        raise invalid("optim.name", optim_name, one_of(*OPTIMIZERS).allowed)
    check_node(cfg.optim, OPTIM_SCHEMAS[optim_name], "optim.")
    for group in PLUGIN_GROUPS:
        check_plugin_node(group, cfg[group])
    if cfg.schedule.min_drop_fraction > cfg.schedule.drop_fraction:
        raise invalid("schedule.min_drop_fraction", cfg.schedule.min_drop_fraction,
                      f"a number in [0, schedule.drop_fraction={cfg.schedule.drop_fraction:g}]")


def resolve_threads(value: int | str) -> int:
    """trainer.threads: `auto` = OMP_NUM_THREADS when it is set (a cluster's or a shared machine's share),
    else the physical cores this process may use."""
    if value != "auto":
        return int(value)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(omp) if omp.isdigit() and int(omp) > 0 else physical_cores()


def display_name(node: Mapping) -> str:
    """A readable name of a plug-in node: its `name`, else its _target_'s last part without `build_`."""
    if node.get("name"):
        return str(node["name"])
    return str(node["_target_"]).rsplit(".", 1)[-1].removeprefix("build_")


def plugin_kwargs(node: Mapping) -> dict[str, Any]:
    """The keyword arguments a plug-in node gives its callable (everything but `_target_` and `name`)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {name: value for name, value in plain.items() if name not in ("_target_", "name")}


SIMPLE_TYPES = {  # annotations of plug-in parameters that are checked before the call
    int: Check("an integer", is_integer),
    float: Check("a number", is_number),
    bool: BOOLEAN,
    str: TEXT,
}


def import_object(path: str) -> Any:
    """The object at dotted `path`: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise  # the module exists but one of its own imports is missing
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(f"no module named {parts[0]!r}")


def locate(group: str, path: str) -> Callable:
    """The callable named by `<group>._target_`."""
    try:
        target = import_object(path)
    except Exception as error:  # ImportError, AttributeError, or whatever the module raises on import
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{group}._target_={path} cannot be imported ({type(error).__name__}: {reason})") from None
    if not callable(target):
        raise UserError(f"{group}._target_={path} is invalid; allowed: an importable class or function")
    return target


def annotated_types(target: Callable) -> dict[str, Any]:
    """The parameters' annotations that resolve (a class: those of its __init__)."""
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable forward references: no type checks, the call itself will tell
        return {}


def check_arguments(group: str, path: str, target: Callable, kwargs: Mapping[str, Any], offered: Mapping) -> None:
    """The node's keys are parameters of `target`, of their annotated simple type; required ones are given."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return
    named = {name: p for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD,
                                                                         p.POSITIONAL_ONLY)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    for name in kwargs:
        if name not in named and not takes_any:
            raise UserError(f"{group}.{name} is not an argument of {path}; its arguments: "
                            f"{', '.join(n for n in named if n not in offered) or 'none'}")
    for name, parameter in named.items():
        if parameter.default is parameter.empty and name not in kwargs and name not in offered:
            raise UserError(f"{group}.{name} is not set; {path} needs it: give it as +{group}.{name}=...")
    hints = annotated_types(target)
    for name, value in kwargs.items():
        check = SIMPLE_TYPES.get(hints.get(name))
        if check is not None and not check.accepts(value):
            raise invalid(f"{group}.{name}", value, check.allowed)


def refused(group: str, path: str, error: Exception) -> UserError:
    """A plug-in's ValueError / TypeError for its arguments, as one line naming the config key."""
    message = " ".join(str(error).split()) or type(error).__name__
    config_key = getattr(error, "key", None)
    if config_key and not message.startswith(f"{config_key}"):
        message = f"{config_key}: {message}"
    if message.startswith(f"{group}.") or message.startswith(f"{group}="):
        return UserError(message)
    return UserError(f"{group} ({path}): {message}")


def call_plugin(group: str, node: Mapping, **offered: Any) -> Any:
    """Call `node._target_` with the node's other keys, plus each `offered` argument it has a parameter for."""
    if isinstance(node, DictConfig):
        check_plugin_node(group, node)
    path = str(node["_target_"])
    target = locate(group, path)
    kwargs = plugin_kwargs(node)
    offered = {name: value for name, value in offered.items() if accepts_parameter(target, name)}
    check_arguments(group, path, target, kwargs, offered)
    try:
        return target(**{**offered, **kwargs})
    except (ValueError, TypeError) as error:
        raise refused(group, path, error) from error


def accepts_parameter(target: Callable, name: str) -> bool:
    try:
        parameter = inspect.signature(target).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
