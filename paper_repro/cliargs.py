"""Argument types and checks shared by the command lines (``python -m paper_repro``, ``python -m paper_repro.fm``):
each rejects a bad value while the arguments are parsed, before any work, with a message naming the fix."""

from __future__ import annotations

import argparse
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
