"""Where the package keeps things on disk and how it names them: the repository root, the results and cache
folders (overridable by environment variables), content hashes, and writes that readers never see half-done."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

DIGEST_ROLE = "bookkeeping"  # codehash: paths and key hashing, never a number

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_results_dir() -> Path:
    """Run folders: ``data/results`` or ``$PAPER_REPRO_RESULTS``."""
    return Path(os.environ.get("PAPER_REPRO_RESULTS", REPO_ROOT / "data" / "results"))


def cache_dir() -> Path:
    """Caches (synthetic sets, initial models): ``data/cache`` or ``$PAPER_REPRO_CACHE``."""
    return Path(os.environ.get("PAPER_REPRO_CACHE", REPO_ROOT / "data" / "cache"))


def resolve_path(p: str | Path) -> Path:
    """``p`` as given if absolute, else relative to the repository root."""
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p


def stable_hash(obj: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys; tuples as lists):
    the same value on every machine and Python version."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:length]


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process, to write into before an atomic rename."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # keeps the suffix (np.savez wants .npz)


def save_atomic(write, path: str | Path) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it to ``path``: a reader sees the old file or
    the whole new one, never half of it (a killed writer leaves only a hidden ``.tmp`` file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
