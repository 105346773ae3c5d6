"""Composing a run's or a sweep's config with Hydra, and each composition error as one line.

The CLI owns one Hydra instance (as hydra.main would create it) and composes through it: a single run's
config once, a sweep's config and then every job's, so that all jobs are checked before the first starts.
Hydra's and OmegaConf's errors become one UserError line naming the key, the value and what is allowed
("sparsty is not a config key; did you mean sparsity?").
"""
import os
import re
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from dst_cli.checks import closest
from dst_cli.errors import UserError
from dst_cli.schema import PLUGIN_GROUPS, TrainConfig, register_target, schema_fields

CONFIG_MODULE = "dst_cli.conf"
CONFIG_NAME = "train"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@contextmanager
def hydra_instance(config_dir: str | None = None):
    """make_hydra's instance for the duration of the block (Hydra allows one per process at a time)."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        yield make_hydra(config_dir)
    finally:
        GlobalHydra.instance().clear()


def make_hydra(config_dir: str | None = None):
    """The Hydra instance hydra.main would make for dst-train (search path: the package's conf, then
    `config_dir` from --config-dir, then any hydra.searchpath a config or override adds)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_automatic_config_search_path(None, None, f"pkg://{CONFIG_MODULE}")
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise UserError(f"--config-dir {config_dir} is not a folder")
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()  # one Hydra per process at a time, as hydra.main has it
    return Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)


def parse_overrides(overrides: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise UserError(" ".join(str(error).split())) from None


def with_derived_targets(overrides: list[str]) -> list[str]:
    """`GROUP._target_=path` without a GROUP option: the option derived from that callable's signature is
    chosen too (GROUP=path), so the node holds its arguments and not those of the group's default."""
    parsed = parse_overrides(overrides)
    chosen = {override.key_or_group for override in parsed}
    added = []
    for override in parsed:
        group, _, name = override.key_or_group.partition(".")
        if name == "_target_" and group in PLUGIN_GROUPS and group != "logger" and group not in chosen \
                and not override.is_sweep_override():
            added.append(f"{group}={register_target(group, override.value())}")
    return [*added, *overrides]


def compose(hydra, overrides: list[str], mode: RunMode) -> DictConfig:
    """The config of a run (RUN) or of a sweep (MULTIRUN: its sweep overrides are not applied), or one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = hydra.compose_config(CONFIG_NAME, overrides, run_mode=mode, with_log_configuration=False)
        except Exception as error:  # Hydra's and OmegaConf's many composition errors
            raise UserError(composition_problem(hydra, overrides, error)) from None
    for warning in caught:
        missing = re.search(r"hydra\.searchpath in \S+ path=(\S+) is not available", str(warning.message))
        if missing:
            raise UserError(f"hydra.searchpath: {missing.group(1)} is not available; allowed: pkg://<an importable "
                            "package> or file://<a folder> holding config groups")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return config


def wants_multirun(hydra, overrides: list[str]) -> bool:
    """Whether the config itself asks to be a sweep (an experiment with hydra.mode: MULTIRUN)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the RUN composition reports them
            config = hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.MULTIRUN,
                                          with_log_configuration=False, validate_sweep_overrides=False)
    except Exception:
        return False  # the RUN composition names the problem
    return config.hydra.mode == RunMode.MULTIRUN


def sweep_jobs(hydra, sweep_config: DictConfig) -> list[list[str]] | None:
    """The override list of every job of a sweep run by Hydra's basic sweeper, in launch order; None for
    another sweeper (Optuna's picks its jobs as it goes)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    if sweep_config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = sweep_config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(sweep_config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_config(hydra, sweep_config: DictConfig, job: list[str]) -> DictConfig:
    """A job's config as the launcher composes it."""
    try:
        return hydra.config_loader.load_sweep_config(sweep_config, job)
    except Exception as error:
        raise UserError(composition_problem(hydra, job, error)) from None


# ----- errors as one line -----
def composition_problem(hydra, overrides: list[str], error: Exception) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        return unknown_option(hydra, error.missing_cfg_file)
    if "Ambiguous value for argument" in text:
        sweeps = [o.input_line for o in parse_overrides(overrides) if o.is_sweep_override()]
        return (f"{', '.join(sweeps) or 'a value'} is a sweep (one run per value); run it with -m: "
                f"dst-train -m {' '.join(overrides)}")
    already = re.search(r"An item is already at '([^']+)'", text)
    if already:
        return f"{already.group(1)} is already in the config; set it without +: " \
               f"{already.group(1)}={next_value(overrides, already.group(1))}"
    cause = error
    while cause.__cause__ is not None and not isinstance(cause, (ValidationError, ConfigKeyError,
                                                                  ConfigAttributeError)):
        cause = cause.__cause__
    if isinstance(cause, ValidationError) and cause.full_key:
        return bad_type(cause.full_key, cause.value)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return unknown_key(hydra, overrides, cause.full_key)
    if isinstance(error, OverrideParseException):
        return text
    if isinstance(error, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'")[1] if "'" in text else text
        return unknown_key(hydra, overrides, key)
    return text or type(error).__name__


def next_value(overrides: list[str], key: str) -> str:
    return next((o.partition("=")[2] for o in overrides if o.lstrip("+").partition("=")[0] == key), "VALUE")


def unknown_option(hydra, missing: str) -> str:
    """`acq=foo`: Hydra's missing config file acq/foo, as the option and the group's options."""
    group, _, name = missing.rpartition("/")
    options = hydra.config_loader.get_group_options(group) if group else []
    if not options:
        return f"{missing} is not a config group; allowed groups: {', '.join(config_groups(hydra))}"
    return f"{group}={name} is not an option; allowed: {', '.join(options)}"


def config_groups(hydra) -> list[str]:
    return sorted(group for group in hydra.config_loader.list_groups("") if group != "hydra")


def bad_type(dotted: str, value: Any) -> str:
    """A value of the wrong type for a schema key (Hydra refused it while composing)."""
    from dst_cli.checks import shown

    spec = schema_field(dotted)
    allowed = spec.metadata["check"].allowed if spec is not None else "a value of the key's type"
    return f"{dotted}={shown(value)} is invalid; allowed: {allowed}"


def schema_field(dotted: str):
    schema, spec = TrainConfig, None
    for part in dotted.split("."):
        spec = schema_fields(schema).get(part) if schema is not None else None
        if spec is None:
            return None
        schema = type(spec.default_factory()) if callable(spec.default_factory) else None
    return spec


def unknown_key(hydra, overrides: list[str], dotted: str) -> str:
    """A key the config does not have, with the closest known key (by edit distance) as a suggestion."""
    known = known_keys(hydra, overrides)
    parent = dotted.rpartition(".")[0]
    siblings = [key for key in known if key.rpartition(".")[0] == parent]
    suggestion = closest(dotted, siblings) or closest(dotted, known)
    line = f"{dotted} is not a config key"
    if suggestion:
        line += f"; did you mean {suggestion}?"
    elif siblings:
        line += f"; the keys {'under ' + parent if parent else 'at the top level'}: " + ", ".join(
            key.rpartition(".")[2] for key in siblings)
    group = dotted.partition(".")[0]
    if group in PLUGIN_GROUPS and parent == group:
        line += f" (a new argument of {group}._target_ is added with +{dotted}=VALUE)"
    return line


def known_keys(hydra, overrides: list[str]) -> list[str]:
    """The dotted keys of the config the overrides' group choices give (their value overrides left out)."""
    groups = set(hydra.config_loader.list_groups(""))
    choices = [o.input_line for o in parse_overrides(overrides)
               if o.key_or_group in groups and not o.is_sweep_override()]
    try:
        config = hydra.compose_config(CONFIG_NAME, choices, run_mode=RunMode.RUN, with_log_configuration=False)
    except Exception:
        config = hydra.compose_config(CONFIG_NAME, [], run_mode=RunMode.RUN, with_log_configuration=False)
    container = OmegaConf.to_container(config, resolve=False)
    container.pop("hydra", None)
    return list(flat_keys(container))


def flat_keys(tree: dict, prefix: str = "") -> Iterable[str]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from flat_keys(value, f"{prefix}{key}.")
        yield f"{prefix}{key}"
