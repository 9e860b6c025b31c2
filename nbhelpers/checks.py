"""Input checks that fail fast, before any model is loaded, with one line naming the parameter and what is allowed."""

from __future__ import annotations

import numbers
from typing import Iterable


class ParameterError(ValueError):
    """A bad value for a named parameter. The message says what was given and what is allowed."""

    def __init__(self, name: str, value, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is not allowed: {allowed}")


def choice(name: str, value, allowed: Iterable):
    allowed = list(allowed)
    if value not in allowed:
        raise ParameterError(name, value, "choose one of " + ", ".join(repr(a) for a in allowed))
    return value


def integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    bounds = _bounds_text(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(name, value, "must be an integer" + bounds)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParameterError(name, value, "must be an integer" + bounds)
    return int(value)


def number(name: str, value, *, minimum: float | None = None, maximum: float | None = None) -> float:
    bounds = _bounds_text(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ParameterError(name, value, "must be a number" + bounds)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParameterError(name, value, "must be a number" + bounds)
    return float(value)


def text(name: str, value, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ParameterError(name, value, "must be a non-empty string")
    return value


def _bounds_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
