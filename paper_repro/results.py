"""Run folders: how a run is keyed (the one place that decides which config fields enter a key), how its folder
is written (all files, then one atomic rename) and how finished runs are read back.

A run folder ``<profile>_<attack>_<defense>_<partition>_s<seed>_<key>/`` holds ``config.json`` (resolved config,
key, data digests, library versions), ``metrics.csv`` (one row per round), ``indices.npz`` (partition, poisoned
indices, malicious clients), ``flagged.json`` and, for a run that others replay, ``trajectory.pt``.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .profiles import without_moved
from .store import default_results_dir, stable_hash

TRAJECTORY = "trajectory.pt"
LATER_FIELDS = {("fl", "precision"): "fp32", ("fm", "precision"): "fp32"}
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


def finished(run_dir: Path) -> bool:
    """A run folder counts as finished when it has its metrics and config (folders are renamed into place only
    when complete, so a half-written one never carries a run's name)."""
    return (run_dir / "metrics.csv").is_file() and (run_dir / "config.json").is_file()


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

    @classmethod
    def load(cls, run_dir: Path) -> RunResult:
        return cls(pd.read_csv(run_dir / "metrics.csv"), run_dir, cached=True)


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that compute results."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for lib in ("torch", "numpy", "diffusers", "scikit-learn", "scipy"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            out[lib] = "missing"
    return out


def write_run(run_dir: Path, meta: dict, history: pd.DataFrame, indices: dict[str, np.ndarray],
              flagged: list[list[int]], extra: dict | None = None) -> Path:
    """Write every file of a run into a temporary folder beside ``run_dir``, then rename it into place. With an
    existing ``run_dir`` (a forced rerun) the new folder is swapped in and the old one removed; if another process
    finished the same run first, its folder is kept. ``extra``: file name → function writing that file."""
    results_dir = run_dir.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=results_dir))
    try:
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=list))
        np.savez_compressed(tmp / "indices.npz", **indices)
        (tmp / "flagged.json").write_text(json.dumps(flagged))
        for name, write in (extra or {}).items():
            write(tmp / name)
        history.to_csv(tmp / "metrics.csv", index=False)  # last: its presence marks a finished run
        if run_dir.exists():  # a forced rerun: swap in the new run, then drop the old one
            old = run_dir.with_name(f".old_{run_dir.name}_{os.getpid()}")
            os.replace(run_dir, old)
            os.replace(tmp, run_dir)
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


def load_results(results_dir: str | Path | None = None, profile: str | None = None) -> pd.DataFrame:
    """All finished runs under ``results_dir`` as one tidy DataFrame (config columns flattened); hidden folders
    (half-written runs) are skipped."""
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    frames = []
    for m in sorted(results_dir.glob("*/metrics.csv")):
        if m.parent.name.startswith(".") or not finished(m.parent):
            continue
        c = json.loads((m.parent / "config.json").read_text())["config"]
        if profile and c["profile"] != profile:
            continue
        df = pd.read_csv(m)
        df["profile"], df["partition"], df["beta"] = c["profile"], c["data"]["partition"], c["data"]["beta"]
        df["poison_ratio"], df["run"] = c["attack"]["poison_ratio"], m.parent.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
