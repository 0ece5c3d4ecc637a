"""Held-out evaluation (docs/protocol.md): defenses at their fixed defaults, on seeds and attack settings that no
default was chosen on. Each setting changes one thing against the validation setting (3×3 corner patch, target 0,
20 % poison, Dirichlet 0.5): the trigger, the target class, the poison share or the partition's β.

``python -m paper_repro heldout --seeds 10 11 12`` writes ``data/tables/heldout_<profile>.csv`` (one row per run)
and prints mean ± 95 % interval per cell.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from ..options import RunOptions
from ..profiles import load_config
from ..results import runs_provenance
from ..runner import run_many
from ..tables import seed_intervals, table_path
from .grid import summarise

VALIDATION = {"attack": {"kind": "fm"}, "data": {"partition": "dirichlet", "beta": 0.5}}
"""The setting the defaults were chosen on (trigger, target, poison share as in the profile)."""
VALIDATION_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (10, 11, 12, 13, 14)
SETTINGS: dict[str, dict] = {
    "random_patch": {"attack": {"trigger": "random_patch"}},
    "sig": {"attack": {"trigger": "sig", "blend_alpha": round(20 / 255, 4)}},
    "target7": {"attack": {"target_class": 7}},
    "poison0.1": {"attack": {"poison_ratio": 0.1}},
    "beta0.1": {"data": {"beta": 0.1}},
}
"""Held-out settings, each one change against :data:`VALIDATION` (SIG at its paper's amplitude 20/255)."""
DEFENSES = ("none", "act_bound", "mm_bm", "pruning")
"""act_bound and the post-fusion baselines (which replay the no-defense training, so a setting costs one training
per seed); update-comparing baselines see no malicious client under the FM attack."""


def setting_config(profile: str, setting: str, defense: str, seed: int, attack: str = "fm"):
    """The config of one held-out cell (``setting`` a key of :data:`SETTINGS` or ``"validation"``)."""
    change = {} if setting == "validation" else SETTINGS[setting]
    merged = {k: dict(v) for k, v in VALIDATION.items()}
    merged["attack"]["kind"] = attack
    for section, values in change.items():
        merged[section] = {**merged.get(section, {}), **values}
    return load_config(profile, defense={"name": defense}, seed=seed, **merged)


def heldout_study(profile: str = "quick", settings: tuple[str, ...] = tuple(SETTINGS),
                  defense_names: tuple[str, ...] = DEFENSES, seeds: tuple[int, ...] = HELDOUT_SEEDS[:3],
                  attacks: tuple[str, ...] = ("fm",), results_dir: str | Path | None = None,
                  tables_dir: str | Path | None = None, progress: bool = True,
                  options: RunOptions | None = None) -> pd.DataFrame:
    """Run (or load) every setting × defense × seed and write the per-run table ``heldout_<profile>.csv``."""
    unknown = [s for s in settings if s != "validation" and s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown held-out settings {unknown}; known: {['validation', *SETTINGS]}")
    combos = list(itertools.product(settings, attacks, defense_names, seeds))
    cfgs = [setting_config(profile, s, d, seed, a) for s, a, d, seed in combos]
    results = run_many(cfgs, results_dir, progress=progress, desc="held-out", options=options)
    df = pd.DataFrame([{"setting": s, "attack": a, "defense": d, "seed": seed, **summarise(r.history),
                        "run": r.run_dir.name} for (s, a, d, seed), r in zip(combos, results)])
    out = table_path("heldout", profile, tables_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False, float_format="%.5g")
    write_table_provenance(df, out, results_dir)
    return df


def write_table_provenance(df: pd.DataFrame, table: Path, results_dir: str | Path | None = None) -> Path:
    """``<table>.provenance.json`` beside a per-run table: the commits, code digests, libraries and options of the
    runs in its ``run`` column (read from their folders)."""
    path = table.with_suffix(".provenance.json")
    path.write_text(json.dumps(runs_provenance(df["run"], results_dir), indent=1))
    return path


def heldout_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % interval per setting × attack × defense (see :func:`paper_repro.tables.seed_intervals`)."""
    return seed_intervals(df, by=("setting", "attack", "defense"))
