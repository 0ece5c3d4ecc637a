"""The values of prose's json and const marks (:mod:`paper_repro.prose`): a key path into a committed JSON file
or into a constant of the code, optionally the ratio of two, optionally x100."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = r'(?:"[^"]*"|[^\s."/]+)(?:\.(?:"[^"]*"|[^\s."/]+))*'
EXPRESSION = re.compile(rf"^\s*(?P<a>{KEY})(?:\s*/\s*(?P<b>{KEY}))?(?P<x100>\s+x100)?\s*$")
"""What follows ``::`` in a json mark and the name in a const mark: a dotted key path (a segment with dots, spaces or
slashes in double quotes; list items by number), optionally ``/`` a second one (their ratio), optionally ``x100``."""


class MarkError(ValueError):
    """A mark that names no table, column or row, or is written wrong: says which and how to write it."""


def _segments(key: str) -> list[str]:
    return [m.strip('"') for m in re.findall(r'"[^"]*"|[^."]+', key)]


def _lookup(obj, key: str, what: str):
    for seg in _segments(key):
        if isinstance(obj, dict) and seg in obj:
            obj = obj[seg]
        elif isinstance(obj, (list, tuple)) and seg.lstrip("-").isdigit() and -len(obj) <= int(seg) < len(obj):
            obj = obj[int(seg)]
        elif not isinstance(obj, (dict, list, tuple)) and hasattr(obj, seg):
            obj = getattr(obj, seg)
        else:
            have = (
                list(obj)[:12]
                if isinstance(obj, dict)
                else f"{type(obj).__name__} of {len(obj)}"
                if isinstance(obj, (list, tuple))
                else type(obj).__name__
            )
            raise MarkError(f"{what}: no {seg!r} in {key!r} (there: {have})")
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        raise MarkError(f"{what}: {key!r} is {obj!r}, not a number")
    return float(obj)


def _expression(spec: str, what: str, source) -> float:
    m = EXPRESSION.match(spec)
    if not m:
        raise MarkError(f"{what}: {spec!r} is not 'KEY[.KEY...] [/ KEY...] [x100]' (quote a key with dots or spaces)")
    value = _lookup(source, m["a"], what)
    if m["b"]:
        den = _lookup(source, m["b"], what)
        if den == 0:
            raise MarkError(f"{what}: {m['b']!r} is 0, the ratio has no value")
        value /= den
    return value * (100.0 if m["x100"] else 1.0)


def json_value(spec: str, cache: dict | None = None) -> float:
    """The number a json mark names: ``PATH :: KEY [/ KEY] [x100]``, PATH relative to the repository root."""
    path, bar, expr = spec.partition("::")
    if not bar:
        raise MarkError(f"json mark {spec!r} has no ':: KEY': write 'PATH :: key.path [x100]'")
    file = ROOT / path.strip()
    cache = {} if cache is None else cache
    if file not in cache:
        if not file.is_file():
            raise MarkError(f"json mark {spec!r}: {path.strip()} does not exist (the path is from the repository root)")
        cache[file] = json.loads(file.read_text())
    return _expression(expr, f"json mark {spec!r}", cache[file])


def const_value(spec: str) -> float:
    """The number a const mark names: ``module:NAME[.KEY...] [/ ...] [x100]`` (a constant of the package's code)."""
    module, colon, expr = spec.partition(":")
    if not colon or not module.strip():
        raise MarkError(f"const mark {spec!r} is not 'module:NAME' (for example paper_repro.studies.claims:WORKS)")
    try:
        mod = importlib.import_module(module.strip())
    except ImportError as e:
        raise MarkError(f"const mark {spec!r}: cannot import {module.strip()!r} ({e})") from None
    return _expression(expr, f"const mark {spec!r}", mod)
