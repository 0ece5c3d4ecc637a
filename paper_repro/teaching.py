"""What a course needs beside the notebooks: a warning where the smoke profile's numbers mean nothing, and the
"what you should see" numbers of each numbered notebook, read from the committed quick-profile tables.

Torch-free: it reads CSV/JSON only, so a notebook can show the expected numbers before anything is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .store import REPO_ROOT
from .tables import DEFENSE_ORDER, read_table

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

NOTEBOOKS = ("01", "02", "03", "04", "05")
SPEED_RESULTS = REPO_ROOT / "benchmarks" / "results" / "speed_cpu.json"

SMOKE_WARNING = (
    "**Smoke profile: the numbers below mean nothing.** `smoke` runs the real code path on 200 random 'blob' images, "
    "a tiny model and 2 rounds, to check that everything works in seconds. A defense can look harmful or useless "
    'here (e.g. act_bound with ASR 1.0 and ACC 0.14). For numbers worth reading, set `profile = "quick"` (about '
    "a minute per training on a laptop) or compare with the *What you should see* cell, which quotes the committed "
    "quick-profile tables."
)


def smoke_warning(profile: str):
    """In ``smoke``, a Markdown warning to display (IPython); otherwise None (nothing is shown)."""
    if profile != "smoke":
        return None
    from IPython.display import Markdown

    return Markdown(f"> ⚠️ {SMOKE_WARNING}")


def _mean_std(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "–"
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std():.3f}"


def _grid_cells(grid: pd.DataFrame, defenses: list[str], partition: str = "iid") -> pd.DataFrame:
    sub = grid[(grid["partition"] == partition) & grid["defense"].isin(defenses)]
    rows = {}
    for (d, a), g in sub.groupby(["defense", "attack"]):
        rows[(d, a)] = {"ACC": _mean_std(g["acc"]), "ASR": _mean_std(g["asr"]), "seeds": len(g)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.names = ["defense", "attack"]
    order = {d: i for i, d in enumerate([*DEFENSE_ORDER, *sorted(set(defenses) - set(DEFENSE_ORDER))])}
    attack_order = {"none": 0, "classic": 1, "fm": 2}
    return out.sort_index(key=lambda ix: ix.map(order) if ix.name == "defense" else ix.map(attack_order))


def expected(notebook: str, tables_dir: str | Path | None = None, defenses: list[str] | None = None) -> pd.DataFrame:
    """The numbers a quick-profile run of ``notebook`` ("01" … "05") should come close to, from the committed
    tables (mean ± std over the seeds they hold). ``defenses`` (notebook 04): which rows; default all."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook={notebook!r}; choose one of {NOTEBOOKS}")
    if notebook in ("01", "02"):
        from .config import num_classes
        from .profiles import load_config  # the registries behind it import torch: only here

        cfg = load_config("quick")
        n, classes, ratio = cfg.fm.n_per_class, num_classes(cfg.data.dataset), cfg.attack.poison_ratio
        if notebook == "01":
            acc = json.loads(SPEED_RESULTS.read_text())["sampler"]["real_classifier_accuracy"]["fp32"]
            return pd.DataFrame(
                {"quick profile": [n * classes, f"{n} per class", f"{acc:.3f}"]},
                index=[
                    "synthetic images",
                    "class balance",
                    "real-data classifier on the samples (benchmarks/results/speed_cpu.json)",
                ],
            )
        k = round(ratio * n)
        return pd.DataFrame(
            {
                "quick profile": [
                    k * (classes - 1),
                    f"{k * (classes - 1) / (n * classes):.0%}",
                    n + k * (classes - 1),
                    n - k,
                ]
            },
            index=[
                f"images poisoned ({ratio:.0%} of each of the {classes - 1} non-target classes)",
                "share of the synthetic set",
                "images labelled as the target class",
                "images of each other class after poisoning",
            ],
        )
    grid = read_table("grid", "quick", tables_dir)
    if notebook == "03":
        return _grid_cells(grid, ["none"]).droplevel("defense")
    if notebook == "04":
        return _grid_cells(grid, defenses or sorted(set(grid["defense"])))
    act = read_table("activation_metrics", "quick", tables_dir)
    rows = {
        a: {
            "ACC no defense": _mean_std(g["acc"]),
            "ASR no defense": _mean_std(g["asr"]),
            "ACC act_bound": _mean_std(g["acc_bounded"]),
            "ASR act_bound": _mean_std(g["asr_bounded"]),
        }
        for a, g in act.groupby("attack", sort=False)
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("attack")
