"""The run ledger: the committed record of every run a table uses, so that results outlive the machine that made
them. A run folder under ``data/results`` is this machine's cache; the ledger (``data/ledger``, or
``$PAPER_REPRO_LEDGER``) is what the repository keeps: one small JSON file per run, named like the run folder
(``<profile>_<attack>_<defense>_<partition>_s<seed>_<run key>.json``), holding the run's ``config.json`` (resolved
config, key, data digests, provenance with the per-file code digests of the run's import closure and the machine),
its per-round metrics, its flagged clients and the SHA-256 of every file of the folder it was made from (weights,
indices and saved weights stay out). A record is written in one atomic rename, so a writer killed at any instant
leaves the old ledger or the new one.

The run store serves a record as it serves a folder: :func:`materialise` rebuilds the folder's small files from a
record whose self-checksum, name, key and file checksums all hold, and refuses anything else (half-written, edited,
copied under another run's name)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from .profiles import config_from_dict
from .results import COMPLETE, damage, key_dict, run_key, sha256
from .store import REPO_ROOT, save_atomic, stable_hash

DIGEST_ROLE = "bookkeeping"  # codehash: records runs, never changes a number

FORMAT = 1
SMALL_FILES = ("config.json", "metrics.csv", "flagged.json")
"""The files of a run folder a record carries (their text, verbatim)."""


class LedgerError(ValueError):
    """A ledger record is unreadable, incomplete or foreign; the message names the file and the fix."""


def ledger_dir() -> Path:
    """``data/ledger`` or ``$PAPER_REPRO_LEDGER``."""
    return Path(os.environ.get("PAPER_REPRO_LEDGER", REPO_ROOT / "data" / "ledger"))


def config_key(config: dict) -> str:
    """What a table cell and a record share: the hash of the key part of a resolved config (no code, no data
    digests), so that a record made by older code is found as that cell's stale record."""
    return stable_hash(key_dict(config))


def _self_digest(rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def make_record(run_dir: Path) -> dict:
    """The ledger record of a finished run folder (raises :class:`LedgerError` if the folder is not one)."""
    problems = damage(run_dir)
    if problems:
        raise LedgerError(f"{run_dir} is not a finished run ({'; '.join(problems)}): nothing to record")
    files = json.loads((run_dir / COMPLETE).read_text())["files"]
    text = {name: (run_dir / name).read_bytes().decode() for name in SMALL_FILES}  # verbatim: no newline translation
    meta = json.loads(text["config.json"])
    rec = {
        "format": FORMAT,
        "run": run_dir.name,
        "key": meta["config_hash"],
        "config_key": config_key(meta["config"]),
        "files": files,
        "text": text,
    }
    rec["sha256"] = _self_digest(rec)
    problems = check_record(rec, run_dir.name)
    if problems:
        raise LedgerError(f"{run_dir} cannot be recorded: {'; '.join(problems)}")
    return rec


def check_record(rec: dict, name: str) -> list[str]:
    """What is wrong with a record read from the file ``<name>.json`` (empty: intact): its self-checksum, the run it
    names, its files against the checksums the run wrote, and its run key against the key its own config and
    digests give."""
    try:
        return _problems(rec, name)
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # a malformed record is refused, never a crash
        return [f"malformed ({type(e).__name__}: {e})"]


def _problems(rec: dict, name: str) -> list[str]:
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        return [f"not a ledger record of format {FORMAT}"]
    out = []
    if rec.get("sha256") != _self_digest(rec):
        out.append("its content changed since it was written (self-checksum differs)")
    if rec.get("run") != name:
        out.append(f"it records run {rec.get('run')!r}, not {name!r} (a file copied under another name?)")
    text, files = rec["text"], rec["files"]
    if not isinstance(text, dict) or not isinstance(files, dict):
        return [*out, "its text and files fields are not mappings"]
    for f in SMALL_FILES:
        if not isinstance(text.get(f), str):
            out.append(f"{f} missing")
        elif hashlib.sha256(text[f].encode()).hexdigest() != files.get(f):
            out.append(f"{f} differs from the checksum the run wrote")
    if out:
        return out
    meta = json.loads(text["config.json"])
    key = meta["config_hash"]
    if key != rec.get("key") or not name.endswith(f"_{key}"):
        out.append(f"its config.json belongs to run key {key!r}")
    if run_key(config_from_dict(meta["config"]), meta["hashes"]) != key:  # the key the run store would compute
        out.append("its run key is not the key of its own config and digests (edited?)")
    if config_key(meta["config"]) != rec.get("config_key"):
        out.append("its config differs from the config key it is filed under")
    return out


def read_record(path: Path) -> dict:
    """A record, checked (:func:`check_record`); raises :class:`LedgerError` naming what is wrong and the fix."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise LedgerError(
            f"{path} is unreadable ({type(e).__name__}): delete it (git checkout restores a committed "
            "one) and recompute the run"
        ) from None
    problems = check_record(rec, Path(path).stem)
    if problems:
        raise LedgerError(
            f"{path} is not an intact ledger record ({'; '.join(problems)}): delete it (or restore it "
            "with git checkout) and recompute the run"
        )
    return rec


def records(ledger: Path | None = None) -> list[Path]:
    """Every record file of the ledger (hidden temporary files of killed writers left out), sorted."""
    base = Path(ledger) if ledger is not None else ledger_dir()
    return sorted(p for p in base.glob("*.json") if not p.name.startswith("."))


def write_record(run_dir: Path, ledger: Path | None = None) -> Path:
    """Record a finished run in the ledger (atomically), unless a record of that run is already there (the first
    record of a run key is kept: a rerun on another machine makes the same run). Records of the same cell made by
    other code (same config key, other run key) are removed: the ledger holds each cell's newest record."""
    base = Path(ledger) if ledger is not None else ledger_dir()
    path = base / f"{run_dir.name}.json"
    if path.is_file():
        try:
            read_record(path)
            return path
        except LedgerError:
            pass  # a damaged record: replaced by the run's own
    rec = make_record(run_dir)
    save_atomic(lambda tmp: tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n"), path)
    prefix = run_dir.name.rsplit("_", 1)[0] + "_"  # same profile, attack, defense, partition and seed
    for other in base.glob(f"{prefix}*.json"):
        if other != path and not other.name.startswith("."):
            try:
                if json.loads(other.read_text()).get("config_key") == rec["config_key"]:
                    other.unlink()
            except (OSError, ValueError, AttributeError):
                continue
    _clean_leftovers(base)
    return path


def _clean_leftovers(base: Path) -> None:
    """Remove the hidden temporary files (``.<name>.<pid>.tmp.json``) of writers that no longer run."""
    from .results import _alive

    for p in base.glob(".*.tmp.json"):
        pid = p.name.rsplit(".tmp.json", 1)[0].rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def materialise(name: str, results_dir: Path, ledger: Path | None = None) -> bool:
    """Rebuild the run folder ``results_dir/name`` from its ledger record (its small files, and a completion record
    naming them); False when the ledger has no record of that run. A damaged record is refused with a warning and
    nothing is written (the caller recomputes the run)."""
    path = (Path(ledger) if ledger is not None else ledger_dir()) / f"{name}.json"
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except LedgerError as e:
        warnings.warn(f"{e}; recomputing it", stacklevel=3)
        return False
    from .results import publish

    def write(tmp: Path) -> None:
        for f in SMALL_FILES:
            (tmp / f).write_text(rec["text"][f])
        files = {f: sha256(tmp / f) for f in SMALL_FILES}
        (tmp / COMPLETE).write_text(json.dumps({"files": files, "ledger": rec["sha256"]}, indent=1))

    publish(Path(results_dir) / name, write)
    return True
