"""Checks of TOML values against typed fields: each problem is one line naming the key (`ConfigError`).

The config dataclasses (probes.config) list these checks per field; `coerce` checks a value against a field's
type (ints are accepted where floats are expected; infinity and NaN are refused: a warm-up of `inf` seconds
never ends).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from analysis.cli import BadInput


class ConfigError(BadInput):
    """A bad bench.toml or a bad command-line value: one line, exit code 2."""


def positive(name: str, v: Any) -> str | None:
    values = v if isinstance(v, tuple) else (v,)
    return None if all(x > 0 for x in values) else f"must be positive, got {v!r}"


def non_negative(name: str, v: Any) -> str | None:
    values = v if isinstance(v, tuple) else (v,)
    return None if all(x >= 0 for x in values) else f"must not be negative, got {v!r}"


DAY_S = 86_400.0


def duration(name: str, v: Any) -> str | None:
    """Seconds: finite (coerce), not negative, and at most a day (a timeout of 1e300 s overflows timedelta,
    a warm-up of a year never ends)."""
    return None if 0 <= v <= DAY_S else f"must be between 0 and {DAY_S:.0f} seconds (a day), got {v!r}"


def fraction(name: str, v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1], got {v!r}"


def non_empty(name: str, v: Any) -> str | None:
    return None if len(v) > 0 else "must not be empty"


def choices(*allowed: str):
    def check(name: str, v: Any) -> str | None:
        values = v if isinstance(v, tuple) else (v,)
        bad = [x for x in values if x not in allowed]
        return (
            None if not bad else f"unknown value {bad[0]!r} (expected one of: {', '.join(map(str, allowed))})"
        )

    return check


def coerce(where: str, tp: Any, value: Any) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(coerce(f"{where}[{i}]", elem, v) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - no optional fields yet
        raise ConfigError(f"{where}: unsupported type")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover
