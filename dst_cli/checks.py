"""What values a config key allows: a Check is the text shown in errors and --help plus the test itself.

Two sources: the runner's own keys declare a Check (trainer.epochs: an integer >= 1); a plug-in's keyword
argument gets the Check of its annotation (`c: float` -> "a number", `bonus: Literal["log", "sqrt"]` ->
"log | sqrt", `milestones: tuple[float, ...]` -> "a list of values, each a number").
"""
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


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
    """A value any of `checks` accepts (a check with no text, one no config value passes, is not shown)."""
    return Check(" | ".join(check.allowed for check in checks if check.allowed),
                 lambda value: any(c.accepts(value) for c in checks))


def auto_or(check: Check) -> Check:
    return either(one_of("auto"), check)


def list_of(check: Check, length: int | None = None) -> Check:
    def accepts(value: Any) -> bool:
        return isinstance(value, (list, tuple, ListConfig)) and (length is None or len(value) == length) and all(
            check.accepts(item) for item in value)

    count = f"{length} " if length is not None else ""
    return Check(f"a list of {count}values, each {check.allowed}", accepts)


BOOLEAN = Check("true | false", lambda value: isinstance(value, bool))
TEXT = Check("a string", lambda value: isinstance(value, str))
NULL = Check("null", lambda value: value is None)
ANYTHING = Check("any value", lambda value: True)
NUMBER = Check("a number", is_number)  # NaN too: the type is right; the callable judges its range
INTEGER = Check("an integer", is_integer)
FRACTION = number_range(0.0, 1.0)
MAPPING = Check("a mapping", lambda value: isinstance(value, (Mapping, DictConfig)))
NOT_FROM_CONFIG = Check("", lambda value: False)
SIMPLE_TYPES = {int: INTEGER, float: NUMBER, bool: BOOLEAN, str: TEXT, type(None): NULL}


def annotation_check(annotation: Any) -> Check:
    """The Check of a parameter's annotation; ANYTHING where the annotation says nothing a config value could
    be tested against (no annotation, Any, Callable, a type variable)."""
    if annotation in SIMPLE_TYPES:
        return SIMPLE_TYPES[annotation]
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return one_of(*arguments)
    if origin in (typing.Union, types.UnionType):
        return either(*(annotation_check(argument) for argument in arguments))
    if origin in (list, tuple, typing.Sequence, typing.MutableSequence) or annotation in (list, tuple):
        items = [argument for argument in arguments if argument is not Ellipsis]
        fixed = origin is tuple and items and Ellipsis not in arguments
        if fixed and len(set(items)) == 1:
            return list_of(annotation_check(items[0]), length=len(items))
        return list_of(annotation_check(items[0]) if len(items) == 1 else ANYTHING, length=len(items) if fixed else None)
    if origin in (dict, typing.Mapping, typing.MutableMapping) or annotation is dict:
        return MAPPING
    if isinstance(annotation, type) and annotation is not typing.Any:
        return NOT_FROM_CONFIG  # a tensor, a module, ...: a config holds none
    return ANYTHING


def shown(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, tuple):
        value = list(value)
    return str(value).replace(" ", "")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def closest(word: str, candidates: list[str]) -> str | None:
    """The candidate nearest to `word`, if it is near enough to be a typo (at most a third of it differs)."""
    if not candidates:
        return None
    best = min(candidates, key=lambda candidate: (edit_distance(word, candidate), candidate))
    return best if edit_distance(word, best) <= max(2, len(word) // 3) else None
