"""Argument types and checks shared by the command lines (``python -m paper_repro``, ``python -m paper_repro.fm``):
each rejects a bad value while the arguments are parsed, before any work, with a message naming the fix."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import PROFILES  # noqa: F401  (re-exported for the command lines)


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
