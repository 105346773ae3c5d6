"""One plug-in path for every group of a run: a `_target_` node, derived from a callable and instantiated by
one function.

A node is `{_target_: dotted.path, **keyword arguments}`. `signature_node` derives it from the callable: every
parameter with a default that a config can hold, a required one as "???" (MISSING), minus the arguments the
runner supplies itself (`offered`: a model's num_classes and input_shape, an optimizer's params, ...). The
built-in group options are such derived nodes, so a default is written once, in the callable's signature.
`instantiate` checks each argument against the callable's signature and annotations (dst_cli.checks), then
calls it; a ValueError or TypeError it raises becomes one line naming the config key.
"""
import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from dst_cli.checks import annotation_check, shown
from dst_cli.errors import UserError

CONFIG_VALUES = (str, int, float, bool, type(None))


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


def locate(group: str, path: Any) -> Callable:
    """The callable named by `<group>._target_`."""
    if not isinstance(path, str) or not path:
        raise UserError(f"{group}._target_ is not set; give the callable as {group}._target_=pkg.module.name")
    try:
        target = import_object(path)
    except Exception as error:  # ImportError, AttributeError, or whatever the module raises on import
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{group}._target_={path} cannot be imported ({type(error).__name__}: {reason})") from None
    if not callable(target):
        raise UserError(f"{group}._target_={path} is invalid; allowed: an importable class or function")
    return target


def dotted_path(target: Callable) -> str:
    return f"{target.__module__}.{target.__qualname__}"


def parameters(target: Callable) -> dict[str, inspect.Parameter]:
    """The keyword-capable parameters of `target` (a class: of its __init__); {} when it has no signature."""
    try:
        found = inspect.signature(target).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return {}
    return {name: p for name, p in found.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def takes_any_keyword(target: Callable) -> bool:
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return True


def annotations(target: Callable) -> dict[str, Any]:
    """The parameters' annotations that resolve (a class: those of its __init__)."""
    function = target.__init__ if inspect.isclass(target) else getattr(target, "func", target)  # partial: its func
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: no type checks, the call itself will tell
        return {}


def as_config_value(value: Any) -> Any:
    """A default as a config can hold it (tuples become lists), or `inspect.Parameter.empty` if it cannot."""
    if isinstance(value, CONFIG_VALUES):
        return value
    if isinstance(value, (list, tuple)):
        items = [as_config_value(item) for item in value]
        return inspect.Parameter.empty if inspect.Parameter.empty in items else items
    return inspect.Parameter.empty


def signature_node(target: Callable, offered: tuple[str, ...] = (), overrides: Mapping | None = None,
                   path: str | None = None) -> dict:
    """`{_target_: path, **arguments}` of `target`: each parameter's default, "???" for a required one, none for
    `offered` ones or defaults a config cannot hold (those keep the callable's default); then `overrides`.
    `path`: how `_target_` names it (default: its module and qualified name)."""
    node: dict[str, Any] = {"_target_": path or dotted_path(target)}
    for name, parameter in parameters(target).items():
        if name in offered or name == "self":
            continue
        if parameter.default is parameter.empty:
            node[name] = MISSING
        elif as_config_value(parameter.default) is not inspect.Parameter.empty:
            node[name] = as_config_value(parameter.default)
    unknown = set(overrides or {}) - set(node)
    if unknown:
        raise ValueError(f"{node['_target_']} has no parameter {', '.join(sorted(unknown))}")
    return {**node, **(overrides or {})}


def plain(node: Mapping) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def node_arguments(node: Mapping) -> dict[str, Any]:
    """The keyword arguments a node gives its callable (everything but `_target_`)."""
    return {name: value for name, value in plain(node).items() if name != "_target_"}


def check_arguments(group: str, target: Callable, kwargs: Mapping[str, Any], offered: Mapping[str, Any]) -> None:
    """The node's keys are parameters of `target`, set, and of their annotated type; required ones are given."""
    path = dotted_path(target) if hasattr(target, "__qualname__") else repr(target)
    named = parameters(target)
    if not takes_any_keyword(target):
        for name in kwargs:
            if name not in named:
                raise UserError(f"{group}.{name} is not an argument of {path}; its arguments: "
                                f"{', '.join(n for n in named if n not in offered) or 'none'}")
    for name, parameter in named.items():
        if parameter.default is parameter.empty and name not in kwargs and name not in offered:
            raise UserError(f"{group}.{name} is not set; {path} needs it: give it as {group}.{name}=...")
    hints = annotations(target)
    for name, value in kwargs.items():
        if value == MISSING:
            raise UserError(f"{group}.{name} is not set; give it as {group}.{name}=...")
        check = annotation_check(hints.get(name, inspect.Parameter.empty))
        if not check.accepts(value):
            raise UserError(f"{group}.{name}={shown(value)} is invalid; allowed: {check.allowed}")


def refused(group: str, path: str, error: Exception) -> UserError:
    """A plug-in's ValueError / TypeError for its arguments, as one line naming the config key."""
    message = " ".join(str(error).split()) or type(error).__name__
    config_key = getattr(error, "key", None)  # the library's SparseConfigError names its option
    if config_key and not message.startswith(f"{config_key}"):
        message = f"{config_key}: {message}"
    if message.startswith(f"{group}.") or message.startswith(f"{group}="):
        return UserError(message)
    return UserError(f"{group} ({path}): {message}")


def as_annotated(target: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Lists become tuples where the parameter is annotated as a tuple (a config only holds lists)."""
    hints = annotations(target)
    return {name: tuple(value) if isinstance(value, list) and typing.get_origin(hints.get(name)) is tuple else value
            for name, value in kwargs.items()}


def instantiate(group: str, node: Mapping, **offered: Any) -> Any:
    """Call `node._target_` with the node's other keys, plus each `offered` argument it has a parameter for.
    Everything is checked before the call; the call's own ValueError / TypeError becomes a UserError."""
    if not isinstance(node, (Mapping, DictConfig)):
        raise UserError(f"{group}={shown(node)} is invalid; allowed: a config group option or {group}._target_=...")
    target = locate(group, node.get("_target_"))
    named = parameters(target)
    offered = {name: value for name, value in offered.items() if name in named or takes_any_keyword(target)}
    kwargs = node_arguments(node)
    check_arguments(group, target, kwargs, offered)
    try:
        return target(**as_annotated(target, {**offered, **kwargs}))
    except (ValueError, TypeError) as error:
        raise refused(group, node["_target_"], error) from error
    except (UserError, OSError):
        raise  # already one line; a file problem is named by the caller
    except Exception as error:  # whatever else a plug-in's constructor raises (RuntimeError, ...): one line
        reason = " ".join(str(error).split()) or "no message"
        raise UserError(f"{group} ({node['_target_']}) failed: {type(error).__name__}: {reason}") from error

