"""Where the package keeps things on disk and how it names them: the repository root, the results and cache
folders (overridable by environment variables), content hashes, and writes that readers never see half-done."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
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


class WriteError(OSError):
    """A file the package could not write, with its path, the cause and what to do."""


WRITE_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than this process may write (a file-size limit)",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.EROFS: "the file system is read-only",
}
TORCH_IO = ("inline_container", "basic_ios", "PytorchStreamWriter", "file write failed", "unexpected pos")
"""Words in the ``RuntimeError`` torch raises when its writer fails (it drops the OS error and the path)."""
LOW_SPACE = 64 * 2**20


@contextmanager
def writing(path: str | Path):
    """Turn a failed write under ``path`` (an ``OSError``, or torch's ``RuntimeError`` that names neither the file nor
    the cause) into a :class:`WriteError` that names the path, the cause and the free space left there."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, RuntimeError) as e:
        code = getattr(e, "errno", None)
        if isinstance(e, RuntimeError) and not any(w in str(e) for w in TORCH_IO):
            raise
        if isinstance(e, OSError) and code not in WRITE_CAUSES:
            raise
        where = Path(path)
        while not where.exists() and where != where.parent:
            where = where.parent
        free = shutil.disk_usage(where).free
        code = code or _likely_cause(free)
        cause = WRITE_CAUSES.get(code) or f"the writer failed ({str(e).splitlines()[0]})"
        raise WriteError(
            code or errno.EIO,
            f"cannot write {path}: {cause}; {free / 2**20:,.0f} MiB free under {where}. Free space or choose another "
            "folder (PAPER_REPRO_RESULTS, PAPER_REPRO_CACHE); nothing half-written is kept",
        ) from e


def _likely_cause(free: int) -> int | None:
    """The errno behind a writer that dropped it (torch's): a nearly full disk, or this process's file-size limit."""
    if free < LOW_SPACE:
        return errno.ENOSPC
    try:
        import resource

        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return errno.EFBIG
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        pass
    return None


def save_atomic(write, path: str | Path) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it to ``path``: a reader sees the old file or
    the whole new one, never half of it (a killed writer leaves only a hidden ``.tmp`` file). A failed write raises
    :class:`WriteError` naming the path and the cause (:func:`writing`)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive lock on ``path`` (created) while the block runs, so that processes making the same cached
    artefact (two run workers fine-tuning the same attacker FM) make it once: the second waits, then finds it.
    Where ``fcntl`` is missing (Windows) it does not lock, and both make it (the same result, twice the time)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
