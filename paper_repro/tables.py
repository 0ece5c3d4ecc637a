"""The small tidy tables committed under ``data/tables`` that the figure notebooks read (so that every figure
rebuilds in seconds from a fresh clone), and T1 (our numbers beside the published ones). Table I/O only: importing
this module (and :mod:`paper_repro.plots`) does not import torch; the tables are computed by
:mod:`paper_repro.studies.compute`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .data import ImageSet
from .stats import t_interval
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
    "attack_breadth": "python -m paper_repro attacks --profile {profile}",
    "attack_strength": "python -m paper_repro attacks --study strength --profile {profile}",
    "attack_adaptive": "python -m paper_repro attacks --study adaptive --profile {profile}",
    "attack_calibration": "python -m paper_repro attacks --study calibration --profile {profile}",
    "attack_calibrated": "python -m paper_repro attacks --study calibrated --profile {profile}",
    "attack_clients": "python -m paper_repro attacks --study clients --profile {profile}",
    "heldout": "python -m paper_repro heldout --profile {profile}",
    "defense_study": "python -m paper_repro.studies.defense_study --budget 60 --jobs 2",
    "amplification": "python -m paper_repro.studies.amplification",
    "mmac_centralised": "python benchmarks/mmac_centralised.py",
}
"""The command that writes a table kind, where it is not ``python -m paper_repro results``."""


def writer_command(kind: str, profile: str = "quick") -> str:
    """The command that writes table ``kind`` of ``profile``, for the messages that ask a user to (re)make it."""
    return WRITTEN_BY.get(kind, "python -m paper_repro results --profile {profile}").format(profile=profile)


def read_table(kind: str, profile: str = "quick", tables_dir: str | Path | None = None) -> pd.DataFrame:
    """A committed table, checked (:func:`check_table`); a missing or damaged one raises with the command that
    writes it."""
    p = table_path(kind, profile, tables_dir)
    how = f"`{writer_command(kind, profile)}`"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} does not exist. Write it with {how} (runs the experiments) or use the committed quick tables "
            f"(tables_dir={TABLES_DIR})."
        )
    try:
        df = pd.read_csv(p)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise TableError(f"{p} is not a readable table ({type(e).__name__}: {e}); rewrite it with {how}") from None
    problems = check_table(df, kind) + _checksum_problems(p)
    if problems:
        raise TableError(f"{p} is damaged: {'; '.join(problems)}. Rewrite it with {how} (or `git checkout {p.name}`)")
    return df


class TableError(ValueError):
    """A table that is not what its writer wrote: named, with the command that rewrites it."""


TABLE_KEYS = {
    "grid": ("defense", "attack", "partition", "seed"),
    "rounds": ("defense", "attack", "partition", "seed", "round"),
    "ablations": ("ablation", "value", "defense", "seed"),
    "attack_breadth": ("attack", "defense", "seed"),
    "attack_strength": ("knob", "value", "defense", "seed"),
    "attack_adaptive": ("attack",),
    "attack_calibration": ("attack", "rung", "seed"),
    "attack_calibrated": ("attack", "defense", "seed"),
    "attack_clients": ("arm", "seed"),
    "defense_study": ("hypothesis", "setting", "defense", "half", "seed"),
    "mars_calibration": ("seed", "round"),
    "activation_metrics": ("attack", "seed"),
    "activations": ("attack", "site", "model", "input", "image"),
}
"""Per table kind, the columns that name one row (a cell and a seed); the study tables (``heldout``, ``*_validation``,
``*_development``) are keyed by setting, attack, defense and seed."""
STUDY_KEYS = ("setting", "attack", "defense", "seed")
BOUNDED = ("acc", "asr", "tpr", "fpr", "lo", "hi", "triggered", "bounded")
"""A numeric column whose name has one of these words (split at ``_``) is a share: it must lie in [0, 1]."""


def table_keys(kind: str) -> tuple[str, ...]:
    return TABLE_KEYS.get(kind, STUDY_KEYS)


def check_table(df: pd.DataFrame, kind: str) -> list[str]:
    """What is wrong with a table of ``kind``: no rows, missing key columns, a (cell, seed) given twice, shares
    outside [0, 1], a missing ACC/ASR in a run that did not diverge, an unknown status (empty list: none)."""
    keys = [k for k in table_keys(kind)]
    if df.empty:
        return ["it has no rows"]
    out = []
    if missing := [k for k in keys if k not in df]:
        return [f"columns {missing} are missing (it has {list(df.columns)})"]
    if (dup := df.duplicated(keys)).any():
        out.append(
            f"{int(dup.sum())} rows repeat a ({', '.join(keys)}) already given, e.g. {df[dup].iloc[0][keys].to_dict()}"
        )
    ok = df["status"].fillna("ok").eq("ok") if "status" in df else pd.Series(True, index=df.index)
    if "status" in df and (odd := set(df["status"].dropna()) - {"ok", "diverged"}):
        out.append(f"status {sorted(odd)} is neither ok nor diverged")
    for col in df.columns:
        if col in keys or not pd.api.types.is_numeric_dtype(df[col]):
            continue
        if set(col.split("_")) & set(BOUNDED) and not col.endswith(("seconds", "_std")):
            v = df[col].dropna()
            if len(bad := v[(v < 0) | (v > 1)]):
                out.append(f"{col} holds {bad.iloc[0]:g} (row {bad.index[0]}), outside [0, 1]")
        if col in ("acc", "asr") and df.loc[ok, col].isna().any():
            out.append(f"{col} is empty in {int(df.loc[ok, col].isna().sum())} rows of runs that did not diverge")
    return out


CHECKSUMS = "checksums.json"
"""Beside the tables: per table file, its row count and SHA-256 as written (:func:`write_csv`)."""


def _digest(path: Path) -> str:
    import hashlib

    # line endings normalised: a checkout that turns \n into \r\n (git's autocrlf on Windows) is the same table
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _checksum_problems(path: Path) -> list[str]:
    import json

    listing = path.parent / CHECKSUMS
    try:
        rec = json.loads(listing.read_text()).get(path.name)
    except (OSError, ValueError, AttributeError):
        return []  # tables written before checksums were kept, or outside the package's writers
    if rec is None or rec.get("sha256") == _digest(path):
        return []
    rows = sum(1 for _ in path.open()) - 1
    return [f"it is not the table that was written ({rows} rows now, {rec.get('rows')} written; checksum differs)"]


def write_csv(df: pd.DataFrame, path: str | Path, float_format: str | None = None) -> Path:
    """Write a table atomically and record its row count and checksum in ``checksums.json`` beside it."""
    from .store import save_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(lambda tmp: df.to_csv(tmp, index=False, float_format=float_format), path)
    return record_checksum(path)


def record_checksum(path: Path) -> Path:
    """Enter the table at ``path`` as it is now (rows, SHA-256) into ``checksums.json`` beside it."""
    import json

    from .store import save_atomic

    listing = path.parent / CHECKSUMS
    try:
        sums = json.loads(listing.read_text())
    except (OSError, ValueError):
        sums = {}
    sums[path.name] = {"rows": sum(1 for _ in path.open()) - 1, "sha256": _digest(path)}
    text = json.dumps(dict(sorted(sums.items())), indent=1) + "\n"
    save_atomic(lambda tmp: Path(tmp).write_text(text), listing)
    return path


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


def best_defense(df: pd.DataFrame, max_cost: float = 0.02, tie: float = 0.01) -> pd.DataFrame:
    """Per attack, the protocol's rule (docs/protocol.md, "Choosing knobs"): among every defense run, no defense
    included, whose mean clean-ACC cost against no defense (paired by seed) is at most ``max_cost``, the lowest mean
    ASR; within ``tie`` of it, the lowest cost. ``best`` is "none" when no defense does better within the budget.
    With the no-defense ASR and both 95 % intervals."""
    s = seed_intervals(df, by=("attack", "defense")).set_index(["attack", "defense"])
    rows = []
    for attack in dict.fromkeys(df["attack"]):
        mine = df[df["attack"] == attack]
        base = mine[mine["defense"] == "none"].set_index("seed")["acc"]
        cost = {
            d: float(np.nanmean(base.reindex(g["seed"]).values - g["acc"].values))
            for d, g in mine.groupby("defense", sort=False)
        }
        ok = [d for d in cost if cost[d] <= max_cost]
        b = s.loc[(attack, "none")]
        row = {"attack": attack, "none_asr": b["asr_mean"], "none_lo": b["asr_lo"], "none_hi": b["asr_hi"]}
        row["none_acc"] = b["acc_mean"]
        if ok:
            low = min(s.loc[(attack, d), "asr_mean"] for d in ok)
            near = [d for d in ok if s.loc[(attack, d), "asr_mean"] <= low + tie]
            # no defense within the tie of the lowest: no defense does better (a cost below 0 is seed noise)
            d = "none" if "none" in near else min(near, key=lambda d: (cost[d], d))
            c = s.loc[(attack, d)]
            row |= {"best": d, "best_asr": c["asr_mean"], "best_lo": c["asr_lo"], "best_hi": c["asr_hi"]}
            row |= {"best_acc": c["acc_mean"], "best_cost": cost[d]}
        rows.append(row)
    return pd.DataFrame(rows)


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


CELL_LABELS = ("setting", "ablation", "knob", "value", "defense", "attack", "partition")


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that did not diverge (all rows of a table without a ``status`` column)."""
    return df[df["status"].fillna("ok").eq("ok")] if "status" in df else df


def read_optional(kind: str, profile: str = "quick", tables_dir: str | Path | None = None) -> pd.DataFrame | None:
    """The rows of runs that did not diverge (:func:`ok_rows`) of a committed table, or None when it is not made
    yet (a damaged table still raises)."""
    try:
        return ok_rows(read_table(kind, profile, tables_dir))
    except FileNotFoundError:
        return None


def seed_list(seeds) -> str:
    """Seeds as the docs list them: sorted, comma-separated ("10, 11, 12")."""
    return ", ".join(str(int(s)) for s in sorted(seeds))


def seeds_text(df: pd.DataFrame) -> str:
    """ "seed 0" or "mean ± std over seeds 0, 1, 2" — for figure titles; it says so when some cells have fewer
    seeds than that (a missing seed) or runs that diverged (left out of the means)."""
    s = sorted(int(x) for x in df["seed"].unique())
    text = f"seed {s[0]}" if len(s) == 1 else f"mean ± std over seeds {', '.join(map(str, s))}"
    ok = ok_rows(df)
    cells = [c for c in CELL_LABELS if c in df]
    n = ok.groupby(cells)["seed"].nunique() if cells else pd.Series([ok["seed"].nunique()])
    n = n.reindex(df.groupby(cells).size().index, fill_value=0) if cells else n
    notes = []
    if (n < len(s)).any():
        notes.append(f"{int((n < len(s)).sum())} of {len(n)} cells with n = {int(n.min())}–{int(n.max())}")
    if len(ok) < len(df):
        notes.append(f"{len(df) - len(ok)} diverged runs left out")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def seed_intervals(
    df: pd.DataFrame,
    by: tuple[str, ...] = ("defense", "attack", "partition"),
    metrics: tuple[str, ...] = ("acc", "asr", "asr_last_k", "acc_triggered", "acc_client_mean"),
    level: float = 0.95,
) -> pd.DataFrame:
    """Per cell of ``by``: mean, std, number of seeds and a Student-t ``level`` interval of each metric over the
    seeds (``<m>_lo``/``<m>_hi``, clipped to [0, 1]; NaN with one seed). Diverged runs (status ≠ ok) are left out
    and counted in ``diverged``. A defense beats another on a metric only where their intervals do not overlap
    (:func:`separated`)."""
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
            # every metric here is a share: the interval is clipped to [0, 1] (a t-interval on a bounded metric)
            lo, hi = t_interval(v, level)
            row |= {f"{m}_mean": mean, f"{m}_std": std, f"{m}_lo": lo, f"{m}_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)


def separated(a: pd.Series, b: pd.Series, metric: str) -> bool:
    """True when the intervals of ``metric`` of two rows of :func:`seed_intervals` do not overlap."""
    return bool(a[f"{metric}_hi"] < b[f"{metric}_lo"] or b[f"{metric}_hi"] < a[f"{metric}_lo"])
