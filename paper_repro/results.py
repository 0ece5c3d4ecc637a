"""Run folders: how a run is keyed (the one place that decides which config fields enter a key), how its folder
is written (all files, then one atomic rename) and how finished runs are read back.

A run folder ``<profile>_<attack>_<defense>_<partition>_s<seed>_<key>/`` holds ``config.json`` (resolved config,
key, data digests, provenance), ``metrics.csv`` (one row per round), ``indices.npz`` (partition, poisoned indices,
malicious clients), ``flagged.json``, for a run computed with ``keep_model`` ``model.pt``, and, written last,
``complete.json``: the SHA-256 of every other file. Only a folder with a completion record whose small files match
it counts as a run; anything else (a half-written, hidden, truncated or edited folder) is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .codehash import LIBRARIES, library_versions
from .config import Config
from .profiles import without_moved
from .store import default_results_dir, stable_hash, writing

MODEL = "model.pt"
"""The final fused weights, in the folder of a run computed with ``keep_model=True`` (never in the ledger)."""
COMPLETE = "complete.json"
REQUIRED = ("config.json", "metrics.csv", "flagged.json")
"""Files every run folder has, also one rebuilt from the ledger (which leaves the indices out)."""
CHECKED_ON_READ = ("config.json", "metrics.csv", "flagged.json", "indices.npz")
"""Files whose checksums are verified whenever a run is read (the saved model when it is asked for)."""
LATER_FIELDS = {
    ("fl", "precision"): "fp32",
    ("fm", "precision"): "fp32",
    ("attack", "params"): {},
    ("attack", "mapping"): "all_to_one",
    ("attack", "schedule"): "sampled",
    ("attack", "attackers_per_round"): 1,
    ("attack", "last_round"): 0,
    ("attack", "trigger_position"): "corner",
    ("data", "test_half"): "all",
}
"""Fields added after runs were cached: left out of the key while at these defaults, so old runs keep their key."""
PROVENANCE = "reconstruction of arXiv 2410.17573 (see docs/paper.md); not the paper's numbers"


def key_dict(d: dict) -> dict:
    """The part of a config dict (``Config.to_dict`` or a saved one) that a run's key covers: everything but the
    execution settings older versions saved, and the :data:`LATER_FIELDS` at their defaults."""
    d = without_moved(d)
    for (section, name), default in LATER_FIELDS.items():
        if d.get(section, {}).get(name, default) == default:
            d.get(section, {}).pop(name, None)
    return d


def run_key(cfg: Config, hashes: dict | None = None) -> str:
    """12 hex digits identifying a run: its key dict plus ``hashes`` (data digests, the defense's resolved
    parameters, the results version)."""
    d = key_dict(cfg.to_dict())
    if hashes:
        d["_extra"] = hashes
    return stable_hash(d)


def run_name(cfg: Config, key: str) -> str:
    return f"{cfg.profile}_{cfg.attack.kind}_{cfg.defense.name}_{cfg.data.partition}_s{cfg.seed}_{key}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def damage(run_dir: Path, names: tuple[str, ...] = CHECKED_ON_READ) -> list[str]:
    """What is wrong with a run folder: no completion record, one that does not list every file the run has (the
    files every run writes included), or files among ``names`` missing or not matching their recorded checksum
    (empty list: intact)."""
    try:
        record = json.loads((run_dir / COMPLETE).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return [f"no readable {COMPLETE}"]
    out = []
    try:  # a whole folder copied or renamed under another run's name carries that run's key
        key = json.loads((run_dir / "config.json").read_text()).get("config_hash", "")
        if not run_dir.name.startswith(".tmp_") and not run_dir.name.endswith(f"_{key}"):
            out.append(f"config.json belongs to run key {key!r}, not to the folder {run_dir.name}")
    except (OSError, ValueError, AttributeError):
        out.append("config.json unreadable")
    required = [n for n in REQUIRED if n not in record]
    unlisted = sorted(f.name for f in run_dir.iterdir() if f.is_file() and f.name != COMPLETE and f.name not in record)
    out += [f"{n} is not in the completion record" for n in [*required, *unlisted]]
    for name in names:
        if name not in record:
            continue
        p = run_dir / name
        if not p.is_file():
            out.append(f"{name} missing")
        elif sha256(p) != record[name]:
            out.append(f"{name} changed since it was written")
    return out


def holds(run_dir: Path, name: str) -> bool:
    """Whether the run folder's completion record lists file ``name`` and the file still matches it."""
    try:
        listed = name in json.loads((run_dir / COMPLETE).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return listed and not damage(run_dir, (name,))


def finished(run_dir: Path) -> bool:
    """A visible run folder with a completion record whose small files match it."""
    return not run_dir.name.startswith(".") and run_dir.is_dir() and not damage(run_dir)


@dataclass(frozen=True)
class RunResult:
    """``history``: one row per round (round 0 = after initialisation); ``final``: last row as a dict."""

    history: pd.DataFrame
    run_dir: Path
    cached: bool = False

    @property
    def final(self) -> dict:
        return self.history.iloc[-1].to_dict()

    @property
    def config(self) -> dict:
        return json.loads((self.run_dir / "config.json").read_text())["config"]

    @property
    def provenance(self) -> dict:
        """What made the run: library versions, git state, run options, times, and the cached inputs it used."""
        meta = json.loads((self.run_dir / "config.json").read_text())
        return {k: meta.get(k) for k in ("versions", "git", "options", "started", "finished", "inputs")}

    @property
    def status(self) -> str:
        """``ok``, or ``diverged`` when the weights became non-finite (the run then reports no ACC/ASR)."""
        return str(self.final.get("status", "ok"))

    @classmethod
    def load(cls, run_dir: Path) -> RunResult:
        return cls(pd.read_csv(run_dir / "metrics.csv"), run_dir, cached=True)


def git_state() -> dict:
    """The package's git commit and whether tracked files differ from it ("unknown" outside a git checkout). The run
    ledger and the tables are left out: a recompute or a study writes records and tables while it runs (the
    calibration rewrites its table after every rung), and they are its output, not its code."""
    import subprocess

    from .store import REPO_ROOT

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO_ROOT),
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ".",
                    ":(exclude)data/ledger",
                    ":(exclude)data/tables",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            != ""
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that compute results."""
    import sys

    out = {"python": platform.python_version(), **library_versions(("paper_repro", "torchvision", *LIBRARIES))}
    for lib in out:  # a loaded module's own version string is the precise one (torch's names its CUDA build)
        out[lib] = getattr(sys.modules.get(lib), "__version__", None) or out[lib]
    return out


def write_run(
    run_dir: Path,
    meta: dict,
    history: pd.DataFrame,
    indices: dict[str, np.ndarray],
    flagged: list[list[int]],
    extra: dict | None = None,
) -> Path:
    """Write every file of a run (:func:`publish`); ``extra``: file name → function writing that file. The
    completion record, written last, holds the SHA-256 of every other file."""

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=list))
        _step("config.json")
        np.savez_compressed(tmp / "indices.npz", **indices)
        _step("indices.npz")
        (tmp / "flagged.json").write_text(json.dumps(flagged))
        _step("flagged.json")
        for name, write_extra in (extra or {}).items():
            write_extra(tmp / name)
            _step(name)
        history.to_csv(tmp / "metrics.csv", index=False)
        _step("metrics.csv")
        files = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / COMPLETE).write_text(json.dumps({"files": files}, indent=1))  # last: marks the folder complete
        _step(COMPLETE)

    return publish(run_dir, write)


def publish(run_dir: Path, write) -> Path:
    """``write(tmp)`` fills a temporary folder beside ``run_dir``, which is then renamed into place. With an existing
    ``run_dir`` (a forced rerun) the new folder is swapped in and the old one removed; if another process finished
    the same run first, its folder is kept."""
    results_dir = run_dir.parent
    with writing(run_dir):
        results_dir.mkdir(parents=True, exist_ok=True)
        clean_leftovers(results_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{os.getpid()}_", dir=results_dir))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it owner-only; a shared results folder must show it to all
        with writing(run_dir):
            write(tmp)
        if run_dir.exists():  # a forced rerun (or a damaged folder): swap in the new run, then drop the old one
            old = run_dir.with_name(f".old_{os.getpid()}_{run_dir.name}")
            os.replace(run_dir, old)
            _step("superseded")
            os.replace(tmp, run_dir)
            _step("swapped")
            shutil.rmtree(old)
        else:
            try:
                os.replace(tmp, run_dir)
            except OSError:  # another process finished the same run first: keep its folder
                if not finished(run_dir):
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return run_dir


def _umask() -> int:
    """This process's umask (read by setting it and putting it back: there is no other way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def machine() -> dict:
    """The CPU a run computed on (model name, core count, whether it has native bf16), for its provenance: float
    rounding differs between CPU kinds, so "bit for bit" holds per kind."""
    from .cliargs import native_bf16

    model = platform.processor() or "unknown"
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "machine": platform.machine(), "native_bf16": native_bf16()}


PUBLISH_STEPS = ("config.json", "indices.npz", "flagged.json", "metrics.csv", COMPLETE, "superseded", "swapped")
"""The points of :func:`write_run` after which a killed writer leaves a different state on disk (files named in
``extra`` add one step each); tests kill a writer at each one."""


def _step(name: str) -> None:
    """Called after each publishing step (a no-op; the fault tests replace it to kill the writer there)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_leftovers(results_dir: Path):
    """``(folder, kind, target)`` for each temporary (``.tmp_<pid>_*``) or superseded (``.old_<pid>_*``) folder of a
    process that no longer runs: what a writer killed mid-publish leaves behind."""
    for p in sorted(results_dir.glob(".[to][ml][pd]_*")):
        parts = p.name.split("_", 2)
        if p.is_dir() and parts[0] in (".tmp", ".old") and len(parts) > 2 and parts[1].isdigit():
            if not _alive(int(parts[1])):
                yield p, parts[0], results_dir / parts[2]


def superseded(results_dir: Path) -> dict[str, Path]:
    """Complete runs whose forced rerun died between its two renames (the new folder never landed): run name → the
    old folder, which is still that run. Read as it is; :func:`clean_leftovers` (a writer) moves it back."""
    return {
        t.name: p for p, kind, t in _dead_leftovers(results_dir) if kind == ".old" and not t.exists() and not damage(p)
    }


def clean_leftovers(results_dir: Path) -> list[Path]:
    """Remove what writers killed mid-publish left behind (:func:`_dead_leftovers`); a superseded folder whose
    replacement never landed (:func:`superseded`) is complete: it is moved back into place, not deleted. Returns what
    was removed or restored."""
    restore = superseded(results_dir)
    removed = []
    for p, _, target in _dead_leftovers(results_dir):
        if restore.get(target.name) == p:
            try:
                os.replace(p, target)
            except OSError:  # another process restored or wrote it first
                shutil.rmtree(p, ignore_errors=True)
        else:
            shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def runs_provenance(run_names, results_dir: str | Path | None = None) -> dict:
    """What made a set of runs (e.g. the rows of a table), read from their folders: :func:`provenance_of`."""
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    return provenance_of(
        [json.loads((results_dir / name / "config.json").read_text()) for name in sorted(set(run_names))]
    )


def provenance_of(metas: list[dict]) -> dict:
    """The distinct git commits (with their dirty flag), run code digests, library versions, run options and
    machines of runs given by their ``config.json`` contents, with how many runs each."""
    from collections import Counter

    seen: dict[str, Counter] = {f: Counter() for f in ("git", "code", "versions", "options", "machine")}
    for meta in metas:
        for field, value in (
            ("git", meta.get("git")),
            ("code", meta["hashes"].get("code")),
            ("versions", meta.get("versions")),
            ("options", meta.get("options")),
            ("machine", meta.get("machine")),
        ):
            seen[field][json.dumps(value, sort_keys=True)] += 1
    return {field: [{"value": json.loads(v), "runs": n} for v, n in c.most_common()] for field, c in seen.items()}


def load_results(results_dir: str | Path | None = None, profile: str | None = None) -> pd.DataFrame:
    """All finished runs under ``results_dir`` as one tidy DataFrame (config columns flattened). A reader: it moves
    and deletes nothing. Hidden folders of running writers are not runs; a run superseded by a forced rerun that died
    mid-swap is read where it lies; run folders that cannot be read or are damaged are left out, with one warning
    that names them."""
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    if not results_dir.is_dir():
        return pd.DataFrame()
    folders = {p.name: p for p in results_dir.iterdir() if not p.name.startswith(".") and p.is_dir()}
    folders = {**superseded(results_dir), **folders}
    frames, left_out = [], []
    for name, folder in sorted(folders.items()):
        if not os.access(folder, os.R_OK | os.X_OK):
            left_out.append(f"{name} (cannot be read: no permission)")
            continue
        if not (folder / "metrics.csv").exists() and not (folder / COMPLETE).exists():
            continue  # not a run folder
        if problems := damage(folder):
            left_out.append(f"{name} ({problems[0]})")
            continue
        c = json.loads((folder / "config.json").read_text())["config"]
        if profile and c["profile"] != profile:
            continue
        df = pd.read_csv(folder / "metrics.csv")
        df["profile"], df["partition"], df["beta"] = c["profile"], c["data"]["partition"], c["data"]["beta"]
        df["poison_ratio"], df["run"] = c["attack"]["poison_ratio"], name
        frames.append(df)
    if left_out:
        warnings.warn(
            f"{len(left_out)} run folder(s) under {results_dir} left out: {'; '.join(left_out)} (a damaged run is "
            "recomputed when its config runs again; fix the permissions of an unreadable one)",
            stacklevel=2,
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
