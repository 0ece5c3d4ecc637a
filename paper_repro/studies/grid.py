"""Grids of experiments (defense × attack × partition × seed) summarised into one tidy table."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from .. import defenses
from ..metrics import summarise
from ..options import RunOptions
from ..profiles import load_config
from ..results import key_dict, load_results
from ..runner import run_many
from ..store import default_results_dir
from ..tables import pivot  # noqa: F401  (the grid table, one partition, wide)

PARTITIONS = {"iid": {"partition": "iid"}, "dirichlet0.5": {"partition": "dirichlet", "beta": 0.5}}


def run_grid(
    profile: str = "quick",
    defense_names: list[str] | None = None,
    attacks: tuple[str, ...] = ("none", "classic", "fm"),
    partitions: tuple[str, ...] = tuple(PARTITIONS),
    seeds: tuple[int, ...] = (0,),
    results_dir: str | Path | None = None,
    out_csv: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
    **overrides,
) -> pd.DataFrame:
    """Run (or load from cache) every combination (:func:`~paper_repro.runner.run_many`, ``options.jobs`` at a
    time); one row per run; written to ``out_csv`` (default ``<results>/grid_<profile>.csv``)."""
    names = defense_names or defenses.names()
    combos = list(itertools.product(names, attacks, partitions, seeds))
    cfgs = [grid_config(profile, attack, name, part, seed, **overrides) for name, attack, part, seed in combos]
    results = run_many(cfgs, results_dir, progress=progress, desc="grid", options=options)
    rows = [
        {
            "defense": name,
            "attack": attack,
            "partition": part,
            "seed": seed,
            **summarise(res.history),
            "run": res.run_dir.name,
        }
        for (name, attack, part, seed), res in zip(combos, results)
    ]
    df = pd.DataFrame(rows)
    out = (
        Path(out_csv)
        if out_csv
        else (Path(results_dir) if results_dir else default_results_dir()) / f"grid_{profile}.csv"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return df


def grid_config(profile: str, attack: str, defense: str, partition: str, seed: int, **overrides):
    """The config of one grid cell (``partition`` a key of :data:`PARTITIONS`)."""
    return load_config(
        profile, attack={"kind": attack}, defense={"name": defense}, data=PARTITIONS[partition], seed=seed, **overrides
    )


def _grid_runs(results_dir: str | Path | None, profile: str) -> pd.DataFrame:
    """Per-round rows of the finished runs whose config is exactly a grid cell's (ablation variants left out),
    with a ``partition`` column named as in :data:`PARTITIONS`."""
    df = load_results(results_dir, profile)
    if df.empty:
        return df
    base = Path(results_dir) if results_dir is not None else default_results_dir()
    keep = {}
    for run, h in df.groupby("run"):
        part = "iid" if h["partition"].iloc[0] == "iid" else f"{h['partition'].iloc[0]}{h['beta'].iloc[0]:g}"
        if part not in PARTITIONS:
            continue
        stored = json.loads((base / run / "config.json").read_text())["config"]
        want = grid_config(profile, h["attack"].iloc[0], h["defense"].iloc[0], part, int(h["seed"].iloc[0]))
        if key_dict(stored) == json.loads(json.dumps(key_dict(want.to_dict()), default=list)):
            keep[run] = part
    df = df[df["run"].isin(keep)].copy()
    df["partition"] = df["run"].map(keep)
    return df


def collect(results_dir: str | Path | None = None, profile: str = "quick") -> pd.DataFrame:
    """The grid table rebuilt from whatever finished grid runs exist (no run is started)."""
    df = _grid_runs(results_dir, profile)
    if df.empty:
        return df
    rows = []
    for run, h in df.groupby("run"):
        h = h.sort_values("round")
        first = h.iloc[0]
        rows.append(
            {
                "defense": first["defense"],
                "attack": first["attack"],
                "partition": first["partition"],
                "seed": int(first["seed"]),
                **summarise(h),
                "run": run,
            }
        )
    return pd.DataFrame(rows).sort_values(["partition", "defense", "attack", "seed"], ignore_index=True)


ROUND_COLUMNS = [
    "defense",
    "attack",
    "partition",
    "seed",
    "round",
    "status",
    "acc",
    "asr",
    "acc_triggered",
    "acc_client_mean",
    "tpr",
    "fpr",
    "num_flagged",
    "local_seconds",
    "fusion_seconds",
    "defense_seconds",
    "eval_seconds",
    "round_seconds",
]


def collect_rounds(results_dir: str | Path | None = None, profile: str = "quick") -> pd.DataFrame:
    """Per-round metrics of every finished grid run (tidy; the data of F2, F5 and F7)."""
    df = _grid_runs(results_dir, profile)
    if df.empty:
        return df
    return df[[c for c in ROUND_COLUMNS if c in df]].sort_values(
        ["partition", "defense", "attack", "seed", "round"], ignore_index=True
    )


def grid_markdown(profile: str = "quick", tables_dir: str | Path | None = None) -> str:
    """The defense grid of the docs, one table per partition: per defense the final ACC / ASR (mean ± std over
    seeds) for no attack, the classic and the FM attack, TPR/FPR of flagging the classic attack's clients, the
    defense's share of a round's seconds (mean over the partition's runs) and the seeds."""
    from ..tables import ok_rows, read_table, seed_list

    df = ok_rows(read_table("grid", profile, tables_dir))
    out = []
    first = list(PARTITIONS)  # iid, then dirichlet0.5; any other partition after them, as the table has it
    parts = sorted(dict.fromkeys(df["partition"]), key=lambda x: first.index(x) if x in first else len(first))
    for part in parts:
        sub = df[df["partition"] == part]
        mean, std = pivot(sub, part), pivot(sub, part, stat="std")
        out += [
            f"**{part}** — final ACC / ASR",
            "",
            "| defense | no attack | classic | FM attack | TPR (classic) | FPR (classic) | overhead | seeds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for d in mean.index:
            cells = [
                f"{mean.loc[d, ('acc', a)]:.3f} ± {std.loc[d, ('acc', a)]:.3f} / "
                f"{mean.loc[d, ('asr', a)]:.3f} ± {std.loc[d, ('asr', a)]:.3f}"
                if pd.notna(mean.loc[d, ("acc", a)])
                else "–"
                for a in ("none", "classic", "fm")
            ]
            mine = sub[sub["defense"] == d]
            classic = mine[mine["attack"] == "classic"]
            seeds = seed_list(mine["seed"].unique())
            out.append(
                f"| {d} | " + " | ".join(cells) + f" | {classic['tpr'].mean():.2f} | {classic['fpr'].mean():.2f} | "
                f"{100 * mine['overhead'].mean():.1f}% | {seeds} |"
            )
        out.append("")
    return "\n".join(out).rstrip()
