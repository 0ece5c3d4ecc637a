"""Command line.

    python -m paper_repro run --profile quick --attack fm --defense none --seed 0
    python -m paper_repro main --profile quick      # the main job: no-defense runs + their figures
    python -m paper_repro grid --profile quick --seeds 0 1 2   # every defense × attack × partition → CSV
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd

from . import plots
from .config import load_config
from .data import REPO_ROOT
from .experiment import keep_freed_memory, prepare, run_experiment

FIGURES = REPO_ROOT / "figures"


def _cfg(profile: str, attack: str, defense: str, seed: int, partition: str | None = None):
    data = {"partition": partition} if partition else {}
    return load_config(profile, attack={"kind": attack}, defense={"name": defense}, data=data, seed=seed)


def main_job(profile: str, seeds: list[int], out: Path = FIGURES) -> dict:
    """Runs clean / classic / FM attack without defense and writes F1 (synthetic samples, clean and poisoned),
    F2 (ACC/ASR per round) and a summary JSON. Returns the summary."""
    t0 = time.perf_counter()
    runs = [run_experiment(_cfg(profile, a, "none", s)) for a in ("none", "classic", "fm") for s in seeds]
    hist = pd.concat([r.history for r in runs], ignore_index=True)
    fig = plots.rounds(hist, title=f"F2 — no defense, {profile} profile, seeds {seeds} (reconstruction, not the "
                                   "paper's numbers)")
    written = plots.savefig(fig, out / "fig02_acc_asr_no_defense")
    prep = prepare(_cfg(profile, "fm", "none", seeds[0]), progress=False)
    clean, poisoned = prep.synthetic_clean, prep.inputs.synthetic_kd
    written += plots.savefig(plots.sample_grid(clean, title=f"F1a — clean synthetic set drawn by the FM ({profile})"),
                             out / "fig01a_synthetic_clean")
    written += plots.savefig(plots.sample_grid(poisoned, highlight=prep.fm_poisoned,
                                               title="F1b — FM attack: poisoned synthetic set (red = triggered, "
                                                     "relabelled to class 0)"), out / "fig01b_synthetic_poisoned")
    final = hist.groupby(["attack", "seed"]).tail(1)
    summary = {"profile": profile, "seeds": seeds,
               "final": final[["attack", "seed", "acc", "asr"]].to_dict(orient="records"),
               "seconds": round(time.perf_counter() - t0, 1),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "figures": [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p) for p in written]}
    (out / f"main_job_{profile}.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m paper_repro")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one experiment (cached by config hash)")
    r.add_argument("--profile", default="quick")
    r.add_argument("--attack", default="none")
    r.add_argument("--defense", default="none")
    r.add_argument("--partition", default=None)
    r.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("main", help="the main job: no-defense runs and their figures")
    m.add_argument("--profile", default="quick")
    m.add_argument("--seeds", type=int, nargs="+", default=[0])
    m.add_argument("--out", default=str(FIGURES), help="folder for its figures and summary (default figures/)")
    g = sub.add_parser("grid", help="every defense × attack × {iid, dirichlet 0.5}: final ACC/ASR table (CSV)")
    g.add_argument("--profile", default="quick")
    g.add_argument("--seeds", type=int, nargs="+", default=[0])
    g.add_argument("--defenses", nargs="+", default=None)
    g.add_argument("--out", default=None)
    g.add_argument("--jobs", type=int, default=1, help="runs side by side in worker processes (default 1)")
    r2 = sub.add_parser("results", help="recompute every table the figure notebooks read (grid, ablations, F3, F1)")
    r2.add_argument("--profile", default="quick")
    r2.add_argument("--seeds", type=int, nargs="+", default=[0])
    r2.add_argument("--defenses", nargs="+", default=None)
    r2.add_argument("--tables-dir", default=None)
    r2.add_argument("--jobs", type=int, default=1,
                    help="runs side by side in worker processes; 2 is faster on 2 cores, equal up to float rounding")
    t = sub.add_parser("tables", help="export the grid and per-round tables from finished run folders (no runs)")
    t.add_argument("--profile", default="quick")
    t.add_argument("--tables-dir", default=None)
    for name, what in (("figures", "the figure notebooks (from the tables) → figures/"),
                       ("notebooks", "the numbered notebooks 01–05 through papermill")):
        f = sub.add_parser(name, help=what)
        f.add_argument("--profile", default="quick")
        f.add_argument("--tables-dir", default=None)
        f.add_argument("--figures-dir", default=str(FIGURES))
        f.add_argument("--out", default=None, help="folder for the executed copies (default build/notebooks)")
    a = p.parse_args(argv)
    keep_freed_memory()  # a long-running process: reuse freed buffers instead of page-faulting fresh ones
    if a.cmd in ("figures", "notebooks"):
        from . import batch
        from .tables import TABLES_DIR

        paths = batch.figure_notebooks() if a.cmd == "figures" else batch.numbered_notebooks()
        out = a.out or batch.BUILD_DIR / a.cmd
        t0 = time.perf_counter()
        done = batch.run_notebooks(paths, out, profile=a.profile, tables_dir=str(a.tables_dir or TABLES_DIR),
                                   figures_dir=str(Path(a.figures_dir).resolve()))
        print(json.dumps({"notebooks": done, "seconds": round(time.perf_counter() - t0, 1), "executed": str(out)},
                         indent=2))
    elif a.cmd == "results":
        from .tables import compute_tables

        print(json.dumps(compute_tables(a.profile, tuple(a.seeds), a.defenses, tables_dir=a.tables_dir,
                                         jobs=a.jobs), indent=2))
    elif a.cmd == "tables":
        from .tables import export_tables

        print("\n".join(str(p) for p in export_tables(a.profile, tables_dir=a.tables_dir)))
    elif a.cmd == "grid":
        from .grid import run_grid

        df = run_grid(a.profile, a.defenses, seeds=tuple(a.seeds), out_csv=a.out, jobs=a.jobs)
        cols = ["acc", "asr", "tpr", "fpr", "overhead"]
        print(df.groupby(["partition", "attack", "defense"])[cols].mean().round(3).to_string())
    elif a.cmd == "run":
        res = run_experiment(_cfg(a.profile, a.attack, a.defense, a.seed, a.partition))
        print(res.history.to_string(index=False))
        print(f"{'cached' if res.cached else 'saved'}: {res.run_dir}")
    else:
        print(json.dumps(main_job(a.profile, a.seeds, Path(a.out)), indent=2))


if __name__ == "__main__":
    main()
