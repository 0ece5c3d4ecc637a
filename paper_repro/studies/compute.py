"""Recompute every table the figure notebooks read: the defense grid, the ablations, the activation study (F3)
and the F1 samples, then export the tidy tables from the finished run folders."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pandas as pd

from ..inputs import prepare
from ..options import RunOptions, options_for
from ..profiles import load_config
from ..tables import export_samples, table_path, write_csv
from .ablations import run_ablations
from .activations import activation_study
from .grid import collect, collect_rounds, run_grid


def export_tables(
    profile: str = "quick", results_dir: str | Path | None = None, tables_dir: str | Path | None = None
) -> list[Path]:
    """Grid table and per-round table from the finished run folders (no run is started). Never replaces a table by
    an empty one or by one that lacks cells the existing table has: it names the missing runs and leaves the files
    alone."""
    grid, rounds = collect(results_dir, profile), collect_rounds(results_dir, profile)
    where = results_dir or "the results folder"
    if grid.empty:
        raise FileNotFoundError(
            f"no finished {profile} grid run under {where}: the tables are left as they are. "
            f"Run the grid first (`python -m paper_repro grid --profile {profile}`)."
        )
    old = table_path("grid", profile, tables_dir)
    if old.is_file():
        cell = ["defense", "attack", "partition", "seed"]
        have = set(map(tuple, grid[cell].astype(str).values))
        missing = [c for c in map(tuple, pd.read_csv(old)[cell].astype(str).values) if c not in have]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} cells of {old} have no finished run under {where} (e.g. "
                f"{missing[:3]}): the tables are left as they are. Run them first "
                f"(`python -m paper_repro grid --profile {profile} --seeds ...`)."
            )
    out = []
    for kind, df in (("grid", grid), ("rounds", rounds)):
        out.append(write_csv(df, table_path(kind, profile, tables_dir), "%.5g"))
    return out


def compute_tables(
    profile: str = "quick",
    seeds: tuple[int, ...] = (0,),
    defense_names: list[str] | None = None,
    ablation_seeds: tuple[int, ...] | None = None,
    results_dir: str | Path | None = None,
    tables_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
) -> dict:
    """Everything the figure notebooks read, recomputed (cached runs are reused): the defense grid, the ablations,
    the activation study (F3) and the F1 samples; then the tables are exported. ``options.jobs`` runs side by side
    (:func:`~paper_repro.runner.run_many`). Returns seconds per step."""
    opts = options_for(profile, options)
    seconds = {}
    t = time.perf_counter()
    prep = prepare(load_config(profile, attack={"kind": "fm"}, seed=seeds[0]), progress, opts)
    export_samples(
        prep.synthetic_clean,
        prep.inputs.synthetic_kd,
        prep.fm_poisoned,
        table_path("samples", profile, tables_dir, "npz"),
    )
    seconds["synthetic_set_and_samples"] = time.perf_counter() - t
    t = time.perf_counter()
    run_grid(profile, defense_names, seeds=tuple(seeds), results_dir=results_dir, progress=progress, options=opts)
    seconds["grid"] = time.perf_counter() - t
    t = time.perf_counter()
    abl = run_ablations(
        profile, seeds=tuple(ablation_seeds or seeds[:1]), results_dir=results_dir, progress=progress, options=opts
    )
    write_csv(abl, table_path("ablations", profile, tables_dir), "%.5g")
    seconds["ablations"] = time.perf_counter() - t
    t = time.perf_counter()
    scores, metrics = activation_study(profile, seed=seeds[0], progress=progress, results_dir=results_dir, options=opts)
    write_csv(scores, table_path("activations", profile, tables_dir), "%.4g")
    write_csv(metrics, table_path("activation_metrics", profile, tables_dir), "%.5g")
    seconds["activation_study"] = time.perf_counter() - t
    export_tables(profile, results_dir, tables_dir)
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    summary = {
        "profile": profile,
        "seeds": list(seeds),
        "jobs": opts.jobs,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": round(sum(seconds.values()), 1),
        "peak_rss_mb": round(rss / 1024, 1),
    }
    table_path("results", profile, tables_dir, "json").write_text(json.dumps(summary, indent=2))
    return summary
