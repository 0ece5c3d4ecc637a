"""Grids of experiments (defense × attack × partition × seed) summarised into one tidy table."""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import defenses
from .config import load_config
from .experiment import default_results_dir, run_experiment

PARTITIONS = {"iid": {"partition": "iid"}, "dirichlet0.5": {"partition": "dirichlet", "beta": 0.5}}


def summarise(history: pd.DataFrame) -> dict:
    """Final ACC/ASR, mean TPR/FPR over rounds, and the defense's share of a round's time."""
    rounds = history[history["round"] > 0]
    last = history.iloc[-1]
    return {"acc": last["acc"], "asr": last["asr"], "tpr": rounds["tpr"].mean(), "fpr": rounds["fpr"].mean(),
            "defense_seconds": rounds["defense_seconds"].mean(), "round_seconds": rounds["round_seconds"].mean(),
            "overhead": rounds["defense_seconds"].mean() / rounds["round_seconds"].mean()}


def run_grid(profile: str = "quick", defense_names: list[str] | None = None,
             attacks: tuple[str, ...] = ("none", "classic", "fm"), partitions: tuple[str, ...] = tuple(PARTITIONS),
             seeds: tuple[int, ...] = (0,), results_dir: str | Path | None = None, out_csv: str | Path | None = None,
             progress: bool = True, **overrides) -> pd.DataFrame:
    """Run (or load from cache) every combination; one row per run; written to ``out_csv`` (default
    ``<results>/grid_<profile>.csv``)."""
    names = defense_names or defenses.names()
    rows = []
    combos = list(itertools.product(names, attacks, partitions, seeds))
    for name, attack, part, seed in tqdm(combos, desc="grid", disable=not progress):
        cfg = load_config(profile, attack={"kind": attack}, defense={"name": name}, data=PARTITIONS[part], seed=seed,
                          **overrides)
        res = run_experiment(cfg, results_dir=results_dir, progress=False)
        rows.append({"defense": name, "attack": attack, "partition": part, "seed": seed, **summarise(res.history),
                     "run": res.run_dir.name})
    df = pd.DataFrame(rows)
    out = Path(out_csv) if out_csv else (Path(results_dir) if results_dir else default_results_dir()) / \
        f"grid_{profile}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return df


def pivot(df: pd.DataFrame, partition: str, metrics: tuple[str, ...] = ("acc", "asr")) -> pd.DataFrame:
    """One row per defense, one column per (metric, attack), mean over seeds, for one partition."""
    sub = df[df["partition"] == partition]
    wide = sub.groupby(["defense", "attack"])[list(metrics)].mean().unstack("attack")
    return wide.reindex(columns=["none", "classic", "fm"], level=1)


def collect(results_dir: str | Path | None = None, profile: str = "quick") -> pd.DataFrame:
    """The grid table rebuilt from whatever finished run folders exist (no run is started)."""
    from .experiment import load_results

    df = load_results(results_dir, profile)
    if df.empty:
        return df
    rows = []
    for run, h in df.groupby("run"):
        h = h.sort_values("round")
        part = "iid" if h["partition"].iloc[0] == "iid" else f"{h['partition'].iloc[0]}{h['beta'].iloc[0]:g}"
        rows.append({"defense": h["defense"].iloc[0], "attack": h["attack"].iloc[0], "partition": part,
                     "seed": int(h["seed"].iloc[0]), **summarise(h), "run": run})
    return pd.DataFrame(rows)
