"""Argument types and checks shared by the command lines (``python -m paper_repro``, ``python -m paper_repro.fm``):
each rejects a bad value while the arguments are parsed, before any work, with a message naming the fix."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .config import PROFILES  # noqa: F401  (re-exported for the command lines)

DIGEST_ROLE = "not computing"  # codehash: see its module docstring


def nonneg_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative; give 0 or more")
    return v


def pos_int(text: str) -> int:
    """An integer >= 1 (jobs, steps)."""
    v = nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}: give 1 or more")
    return v


def pos_float(text: str) -> float:
    """A finite number > 0 (minutes of budget)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text}: give a finite number > 0")
    return v


def writable_dir(path: str | Path) -> str | None:
    """None if ``path`` is (or can be created as) a writable folder; otherwise why not."""
    p = Path(path).resolve()
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{path} cannot be created: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path} is not writable here ({existing} is read-only); choose another folder"
    return None


def check_unique(parser: argparse.ArgumentParser, option: str, values) -> None:
    if values is not None and len(set(values)) != len(values):
        parser.error(f"{option} {' '.join(map(str, values))}: each value once")


def native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); None where it cannot be read (not Linux).
    Without it, torch emulates bf16 and the fast mode is slower than fp32 (docs/speed.md: ~8× on an AVX2 CPU)."""
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return None
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


FAST_ON_SLOW_CPU = (
    "warning: --fast runs in bf16, but this CPU has no native bf16 (AVX-512 BF16 or AMX): torch "
    "emulates it, and a run is several times slower than fp32 here (docs/speed.md). Leave out --fast "
    "on this machine, or use a GPU (device cuda)."
)


# ---- flags generated from the config dataclasses ------------------------------------------------------------------
# Why argparse built from the dataclasses (and not tyro or jsonargparse): the frozen config dataclasses already hold
# every field's type, default and documented source, and load_config already validates a nested override dict with
# the messages the bad-input catalogue expects; a generator of a few lines turns each field into one typed flag
# (``--fl.lr 0.05``) without a second validation layer, a new dependency or another help layout.


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (``x: int = 1`` then ``\"\"\"...\"\"\"``)."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _typed(tp: type, flag: str):
    """The argparse ``type`` for a config field of type ``tp``: bools read true/false, numbers name the flag."""
    if tp is bool:

        def to_bool(text: str) -> bool:
            if text.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"{text!r}: write true or false")
            return text.lower() == "true"

        return to_bool
    if tp in (int, float):

        def number(text: str):
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if tp is int else 'a number'}")

        return number
    return str


def add_config_flags(parser: argparse.ArgumentParser, root: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the config dataclass ``root`` and of its section dataclasses: ``--seed``,
    ``--fl.lr``, ``--attack.fm_stages init kd``. Fields typed ``dict`` (component parameters) get no flag here."""
    import dataclasses
    import typing

    def walk(cls: type, prefix: str) -> None:
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        group = parser.add_argument_group(f"config section {prefix[:-1]}") if prefix else parser
        for f in dataclasses.fields(cls):
            name, tp = prefix + f.name, hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, name + ".")
                continue
            if name in skip or tp is dict:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kw: dict = {"nargs": "*"} if typing.get_origin(tp) is tuple else {}
            elem = typing.get_args(tp)[0] if kw else tp
            group.add_argument(
                f"--{name}",
                dest=f"config:{name}",
                type=_typed(elem, name),
                default=argparse.SUPPRESS,
                metavar=elem.__name__.upper(),
                help=f"{docs.get(f.name, '')} (unset: the profile's value; dataclass default {default!r})".replace(
                    "%", "%%"
                ),
                **kw,
            )

    walk(root, "")


def config_overrides(ns: argparse.Namespace) -> dict:
    """The generated flags that were given, as the nested dict ``load_config`` takes (``{"fl": {"lr": 0.05}}``)."""
    out: dict = {}
    for dest, value in vars(ns).items():
        if dest.startswith("config:"):
            *parents, leaf = dest.removeprefix("config:").split(".")
            node = out
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = list(value) if isinstance(value, list) else value
    return out
