"""The main job: the no-defense runs (clean, classic attack, FM attack) and their figures F1 and F2."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pandas as pd

from .. import plots
from ..inputs import prepare
from ..profiles import load_config
from ..runner import run_experiment
from ..store import REPO_ROOT

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
    fig = plots.rounds(
        hist, title=f"F2 — no defense, {profile} profile, seeds {seeds} (reconstruction, not the paper's numbers)"
    )
    written = plots.savefig(fig, out / "fig02_acc_asr_no_defense")
    prep = prepare(_cfg(profile, "fm", "none", seeds[0]), progress=False)
    clean, poisoned = prep.synthetic_clean, prep.inputs.synthetic_kd
    written += plots.savefig(
        plots.sample_grid(clean, title=f"F1a — clean synthetic set drawn by the FM ({profile})"),
        out / "fig01a_synthetic_clean",
    )
    written += plots.savefig(
        plots.sample_grid(
            poisoned,
            highlight=prep.fm_poisoned,
            title="F1b — FM attack: poisoned synthetic set (red = triggered, relabelled to class 0)",
        ),
        out / "fig01b_synthetic_poisoned",
    )
    final = hist.groupby(["attack", "seed"]).tail(1)
    summary = {
        "profile": profile,
        "seeds": seeds,
        "final": final[["attack", "seed", "acc", "asr"]].to_dict(orient="records"),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "figures": [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p) for p in written],
    }
    (out / f"main_job_{profile}.json").write_text(json.dumps(summary, indent=2))
    return summary
