"""Validation helpers of the config (and of the components' parameters): the error type, the float32 range, the
checks each field's ``__post_init__`` calls, and :func:`plain` (numpy scalars as Python values)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: the models compute in float32 (or bf16), so a larger setting would overflow to inf."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    _check(value in options, f"{name}={value!r} is unknown; choose one of {list(options)}")


def _fraction(name: str, value: float) -> None:
    _check(0.0 <= value <= 1.0, f"{name}={value} is outside [0, 1]; give a fraction such as 0.2")


def plain(v: Any) -> Any:
    """``v`` with numpy scalars (``np.int64(2)``, ``np.float32(0.1)``, ``np.bool_(True)``) as the Python values they
    hold, inside lists, tuples and dicts too: what a config and its JSON record store. Anything else is returned
    as it is (numpy is not imported)."""
    if type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
        return v.item()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(plain(x) for x in v)
    return v


def _check_types(obj: Any, section: str) -> None:
    """Every ``int``/``float``/``str``/``bool`` field of ``obj`` holds a value of that type (a bool is not a count, a
    string is not a number, a float must be finite); numpy scalars are taken as their Python values (:func:`plain`)."""
    for f in dataclasses.fields(obj):
        if (v := plain(getattr(obj, f.name))) is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, v)
        v, name = getattr(obj, f.name), f"{section}.{f.name}" if section else f.name
        if f.type == "int":
            _check(isinstance(v, int) and not isinstance(v, bool), f"{name}={v!r} must be an integer")
        elif f.type == "float":
            _check(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                f"{name}={v!r} must be a finite number",
            )
            _check(
                abs(v) <= FLOAT32_MAX,
                f"{name}={v!r} is beyond float32's range (±{FLOAT32_MAX:.3g}), where the models compute; give a "
                "smaller value",
            )
        elif f.type in ("str", "bool"):
            _check(type(v).__name__ == f.type, f"{name}={v!r} must be a {f.type}")


def _positive(name: str, value: float) -> None:
    _check(
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
        f"{name}={value} must be a finite number > 0",
    )
