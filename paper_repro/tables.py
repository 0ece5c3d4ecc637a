"""The small tidy tables committed under ``data/tables`` that the figure notebooks read (so that every figure
rebuilds in seconds from a fresh clone), and T1 (our numbers beside the published ones). Table I/O only: importing
this module (and :mod:`paper_repro.plots`) does not import torch; the tables are computed by
:mod:`paper_repro.studies.compute`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .data import ImageSet
from .store import REPO_ROOT

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

TABLES_DIR = REPO_ROOT / "data" / "tables"
# reading order of tables and figures: no defense, update-comparing, detection, post-fusion, the paper's defense
DEFENSE_ORDER = [
    "none",
    "norm_clip",
    "dp",
    "krum",
    "multi_krum",
    "median",
    "trimmed_mean",
    "flame",
    "foolsgold",
    "mars",
    "geminiguard",
    "weidetect",
    "pruning",
    "mm_bm",
    "mmac",
    "act_bound",
]


def table_path(kind: str, profile: str, tables_dir: str | Path | None = None, suffix: str = "csv") -> Path:
    """``<tables_dir>/<kind>_<profile>.<suffix>``, e.g. ``grid_quick.csv`` (noted as a source of the figures this
    process draws next: :mod:`paper_repro.figstamp`)."""
    from .figstamp import note_source

    path = Path(tables_dir or TABLES_DIR) / f"{kind}_{profile}.{suffix}"
    note_source(path)
    return path


WRITTEN_BY = {
    "attack_breadth": "attacks",
    "attack_strength": "attacks --study strength",
    "attack_adaptive": "attacks --study adaptive",
    "heldout": "heldout",
}
"""The command that writes a table kind, where it is not ``results``."""


def read_table(kind: str, profile: str = "quick", tables_dir: str | Path | None = None) -> pd.DataFrame:
    """A committed table; a missing one raises with the command that writes it."""
    p = table_path(kind, profile, tables_dir)
    if not p.is_file():
        how = WRITTEN_BY.get(kind, "results")
        raise FileNotFoundError(
            f"{p} does not exist. Write it with `python -m paper_repro {how} --profile "
            f"{profile}` (runs the experiments) or use the committed quick tables "
            f"(tables_dir={TABLES_DIR})."
        )
    return pd.read_csv(p)


# ------------------------------------------------------------------------------------------- grid (F4)
def pivot(
    df: pd.DataFrame, partition: str, metrics: tuple[str, ...] = ("acc", "asr"), stat: str = "mean"
) -> pd.DataFrame:
    """One row per defense, one column per (metric, attack), ``stat`` ("mean" or "std") over seeds, for one
    partition."""
    sub = df[df["partition"] == partition]
    wide = sub.groupby(["defense", "attack"])[list(metrics)].agg(stat).unstack("attack")
    wide = wide.reindex(columns=["none", "classic", "fm"], level=1)
    order = [d for d in DEFENSE_ORDER if d in wide.index] + sorted(set(wide.index) - set(DEFENSE_ORDER))
    return wide.reindex(order)


# --------------------------------------------------------------------------------------------- F1 samples
def export_samples(
    clean: ImageSet, poisoned: ImageSet, poisoned_idx: np.ndarray, path: str | Path, per_class: int = 8, seed: int = 0
) -> Path:
    """``per_class`` random images per label of the clean and of the poisoned synthetic set (with a flag for the
    triggered ones) into one small .npz."""
    rng = np.random.default_rng(seed)
    flag = np.zeros(len(poisoned), bool)
    flag[np.asarray(poisoned_idx, dtype=np.int64)] = True

    def pick(s: ImageSet) -> np.ndarray:
        return np.concatenate([rng.permutation(np.flatnonzero(s.y == c))[:per_class] for c in range(s.num_classes)])

    ic, ip = pick(clean), pick(poisoned)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        clean_x=clean.x[ic],
        clean_y=clean.y[ic],
        poisoned_x=poisoned.x[ip],
        poisoned_y=poisoned.y[ip],
        poisoned_flag=flag[ip],
        classes=np.array(clean.classes),
    )
    return path


def load_samples(path: str | Path) -> tuple[ImageSet, ImageSet, np.ndarray]:
    """(clean, poisoned, indices of the triggered images in ``poisoned``) from :func:`export_samples`."""
    z = np.load(path)
    classes = tuple(str(c) for c in z["classes"])
    return (
        ImageSet(z["clean_x"], z["clean_y"], classes),
        ImageSet(z["poisoned_x"], z["poisoned_y"], classes),
        np.flatnonzero(z["poisoned_flag"]),
    )


# ----------------------------------------------------------------------------------------------- T1
PUBLISHED = TABLES_DIR / "published.csv"


def compare_published(grid: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """T1: every published cell (docs/paper.md, "Published numbers") beside our mean ± std over seeds for the matching
    (attack, defense, partition) of the grid. ACC/ASR in %."""
    if published is None:
        from .figstamp import note_source

        note_source(PUBLISHED)
    pub = published if published is not None else pd.read_csv(PUBLISHED)
    stats = grid.groupby(["attack", "defense", "partition"])[["acc", "asr"]].agg(["mean", "std", "count"])
    rows = []
    for _, p in pub.iterrows():
        key = (p["ours_attack"], p["ours_defense"], p["ours_partition"])
        r = {
            "source": p["source"],
            "setting": p["setting"],
            "published ACC": _pct(p["acc"]),
            "published ASR": _pct(p["asr"]),
        }
        if key in stats.index:
            s = stats.loc[key]
            r["ours ACC"] = _pm(s[("acc", "mean")], s[("acc", "std")])
            r["ours ASR"] = _pm(s[("asr", "mean")], s[("asr", "std")])
            r["seeds"] = int(s[("acc", "count")])
        else:
            r["ours ACC"] = r["ours ASR"] = "not run"
            r["seeds"] = 0
        r["ours (attack / defense / partition)"] = " / ".join(key)
        r["differs"] = p["differs"]
        rows.append(r)
    return pd.DataFrame(rows)


def _pct(v) -> str:
    return "–" if pd.isna(v) else f"{float(v):.1f}"


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}" + ("" if pd.isna(std) else f" ± {100 * std:.1f}")


def seeds_text(df: pd.DataFrame) -> str:
    """ "seed 0" or "mean ± std over seeds 0, 1, 2" — for figure titles."""
    s = sorted(int(x) for x in df["seed"].unique())
    return f"seed {s[0]}" if len(s) == 1 else f"mean ± std over seeds {', '.join(map(str, s))}"


def seed_intervals(
    df: pd.DataFrame,
    by: tuple[str, ...] = ("defense", "attack", "partition"),
    metrics: tuple[str, ...] = ("acc", "asr", "asr_last_k", "acc_triggered", "acc_client_mean"),
    level: float = 0.95,
) -> pd.DataFrame:
    """Per cell of ``by``: mean, std, number of seeds and a Student-t ``level`` interval of each metric over the
    seeds (``<m>_lo``/``<m>_hi``; NaN with one seed). Diverged runs (status ≠ ok) are left out and counted in
    ``diverged``. A defense beats another on a metric only where their intervals do not overlap
    (:func:`separated`)."""
    from scipy import stats

    is_ok = df["status"].fillna("ok").eq("ok") if "status" in df else pd.Series(True, index=df.index)
    diverged = df.assign(_bad=~is_ok).groupby(list(by))["_bad"].sum()
    rows = []
    for key, g in df[is_ok].groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"], row["diverged"] = len(g), int(diverged.get(key if len(by) > 1 else key[0], 0))
        for m in (m for m in metrics if m in g):
            v = g[m].astype(float).dropna()
            mean, std = v.mean(), v.std(ddof=1) if len(v) > 1 else float("nan")
            half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * std / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            row |= {f"{m}_mean": mean, f"{m}_std": std, f"{m}_lo": mean - half, f"{m}_hi": mean + half}
        rows.append(row)
    return pd.DataFrame(rows)


def separated(a: pd.Series, b: pd.Series, metric: str) -> bool:
    """True when the intervals of ``metric`` of two rows of :func:`seed_intervals` do not overlap."""
    return bool(a[f"{metric}_hi"] < b[f"{metric}_lo"] or b[f"{metric}_hi"] < a[f"{metric}_lo"])
