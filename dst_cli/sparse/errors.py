"""The library's error types and the checks that raise them (one readable line: the value and what is allowed)."""
import math
from collections.abc import Sequence
from numbers import Integral, Real


class SparseConfigError(ValueError):
    """A bad argument or option; `key` names it as a config key would ("sparsity", "acq.c", ...)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class MasksDiverged(RuntimeError):
    """The ranks of a distributed run hold different masks after a mask update."""


def invalid(key: str, value, allowed: str) -> SparseConfigError:
    return SparseConfigError(key, f"{key}={value} is invalid; allowed: {allowed}")


def check_number(key: str, value, low: float, high: float = math.inf, *, low_open=False, high_open=False) -> float:
    """A finite real number (not a bool) in the interval; NaN and strings are refused."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    allowed = f"a finite number >= {low:g}" if high == math.inf else f"a number in {interval}"
    if low_open and high == math.inf:
        allowed = f"a finite number > {low:g}"
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise invalid(key, value, allowed)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise invalid(key, value, allowed)
    return float(value)


def check_int(key: str, value, low: int, high: int | None = None) -> int:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or (high is not None and value > high):
        raise invalid(key, value, allowed)
    return int(value)


def check_bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise invalid(key, value, "true or false")
    return value


def check_choice(key: str, value, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise invalid(key, value, " | ".join(choices))
    return value
