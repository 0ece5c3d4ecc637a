"""One convention for the knobs of every attack and defense: each class declares ``Params``, a frozen dataclass made
with :func:`params`, whose fields carry their type, default, range and meaning (``Field(default, ge=…, description=
…)``); pydantic validates them, once, when the component is built. A variant overrides only the defaults it changes
by subclassing its parent's ``Params``. What the fields hold (with the defaults) is part of a run's key, so a
changed default re-runs what it affects.

Why pydantic: declarative ranges and choices (``Literal``) with strict types (a bool is not a count, 2.5 is not an
integer, NaN is not a number), and one error format for all components, instead of hand-written checks per class.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pydantic
from pydantic import ConfigDict, Field  # noqa: F401  (Field is what the components declare their knobs with)

from .config import FLOAT32_MAX, plain

STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


def params(cls: type) -> type:
    """Decorator: ``cls`` as a frozen, validated parameter dataclass."""
    return pydantic.dataclasses.dataclass(frozen=True, config=STRICT)(cls)


@params
class NoParams:
    """A component without parameters."""


def defaults(schema: type) -> dict[str, Any]:
    """Every field of ``schema`` with its default."""
    return {k: f.get_default(call_default_factory=True) for k, f in schema.__pydantic_fields__.items()}


def _listed(v: Any) -> Any:
    """Tuples as lists (what JSON gives back), numpy scalars as Python values."""
    v = plain(v)
    return list(v) if isinstance(v, tuple) else v


def build(schema: type, given: dict | None, owner: str):
    """``schema(**given)``, validated; a ValueError names the owner, each bad key, its value, what it should be and
    its default (unknown keys: the accepted ones)."""
    given = {k: _listed(v) for k, v in (given or {}).items()}
    known = defaults(schema)
    if unknown := sorted(set(given) - set(known)):
        raise ValueError(f"bad parameters {unknown} for {owner}; accepted: {sorted(known)}")
    if huge := [k for k, v in given.items() if isinstance(v, float) and FLOAT32_MAX < abs(v) < float("inf")]:
        raise ValueError(
            f"{owner}: " + "; ".join(f"{k}={given[k]!r}: beyond float32's range (±{FLOAT32_MAX:.3g})" for k in huge)
        )
    try:
        value = schema(**given)
    except pydantic.ValidationError as e:
        raise ValueError(f"{owner}: " + "; ".join(_explain(e, given, known))) from None
    if check := getattr(value, "check", None):
        check()  # cross-field rules, raising ValueError naming the fields
    return value


def _explain(err: pydantic.ValidationError, given: dict, known: dict) -> list[str]:
    by_key: dict[str, list[str]] = {}
    for item in err.errors():
        key = str(item["loc"][0]) if item["loc"] else "?"
        by_key.setdefault(key, []).append(item["msg"][0].lower() + item["msg"][1:])
    return [
        f"{k}={given.get(k)!r}: {' or '.join(dict.fromkeys(m))} (default {known.get(k)!r})" for k, m in by_key.items()
    ]


def resolved(schema: type, given: dict | None, owner: str) -> dict[str, Any]:
    """The defaults of ``schema`` with ``given`` applied, after validating them: part of a run's key. Values are kept
    as given (an integer given for a float stays an integer), so keys made before this convention stay valid."""
    build(schema, given, owner)
    return {**defaults(schema), **{k: _listed(v) for k, v in (given or {}).items()}}


LIMITS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}


def type_name(tp: Any) -> str:
    """A readable name of a field's type: ``'a' | 'b'`` for choices, ``list of str``, ``float or None``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def describe(schema: type) -> list[dict[str, Any]]:
    """Per field: name, type, default, limits and description (for ``--help`` and docs/components.md)."""
    out = []
    for name, f in schema.__pydantic_fields__.items():
        limits = [f"{sign} {getattr(m, k)}" for m in f.metadata for k, sign in LIMITS.items() if hasattr(m, k)]
        out.append(
            {
                "name": name,
                "type": type_name(f.annotation),
                "default": f.get_default(call_default_factory=True),
                "limits": ", ".join(limits),
                "description": f.description or "",
            }
        )
    return out


def variant(parent: type, doc: str = "", **new_defaults: Any) -> type:
    """``parent``'s parameters with some defaults changed (types, limits and descriptions kept): how a variant of a
    component (MM-BM with per-neuron bounds, say) declares only what differs."""
    fields = parent.__pydantic_fields__
    if unknown := sorted(set(new_defaults) - set(fields)):
        raise TypeError(f"variant of {parent.__qualname__}: no parameters {unknown}")
    ns: dict[str, Any] = {"__annotations__": {}, "__doc__": doc or parent.__doc__, "__module__": parent.__module__}
    for k, v in new_defaults.items():
        ns["__annotations__"][k] = fields[k].annotation
        ns[k] = pydantic.fields.FieldInfo.merge_field_infos(fields[k], default=v)
    return params(type(parent.__name__, (parent,), ns))
