"""Input checks that fail fast, before any model is loaded, with one line naming the parameter and what is allowed."""

from __future__ import annotations

import numbers
from typing import Iterable


class ParameterError(ValueError):
    """A bad value for a named parameter. The message says what was given and what is allowed."""

    def __init__(self, name: str, value, allowed: str):
        # One line whatever the cause quotes (a library's multi-line message): the CLI prints exactly this line.
        allowed = " ".join(str(allowed).split())
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={_short(value)} is not allowed: {allowed}")


def _short(value, limit: int = 120) -> str:
    """The value as Python writes it, cut in the middle when long (a pasted 10 kB prompt stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2:]


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
    return unicode_text(name, value)


def unicode_text(name: str, value: str) -> str:
    """`value` as text that can be written as UTF-8.

    Under a C/POSIX locale Python decodes non-ASCII command-line bytes as lone surrogates ("surrogateescape"): an emoji
    typed in a terminal arrives as four of them, and writing it later fails with "surrogates not allowed". Such
    text is decoded again as the UTF-8 it was; anything still not encodable is refused here, naming the parameter.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise ParameterError(name, value, "must be valid Unicode text (it holds a lone surrogate or bytes that "
                             "are not UTF-8)") from None


def existing_json(name: str, path, what: str = "a JSON file"):
    """The parsed JSON of `path`; a missing, unreadable, non-UTF-8 or truncated file raises ParameterError naming it."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(name, str(path), f"{what}; it does not exist") from None
    except UnicodeDecodeError as error:
        raise ParameterError(name, str(path), f"{what} in UTF-8; byte {error.start} is not UTF-8") from None
    except ValueError as error:
        raise ParameterError(name, str(path), f"{what}; it is not valid JSON ({error})") from None
    except OSError as error:
        raise ParameterError(name, str(path), f"{what}; it cannot be read ({error.strerror or error})") from None


def _bounds_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
