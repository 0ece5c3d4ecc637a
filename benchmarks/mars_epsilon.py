"""MARS's ε under the evaluation protocol (docs/protocol.md), quick profile, validation setting (Dirichlet 0.5, seeds
0-2):

1. ``python -m paper_repro calibrate-mars`` measures the distance between MARS's two clusters in every round of
   benign runs (data/tables/mars_calibration_quick.csv); the rule fixed beforehand sets ε to the largest one;
2. this script compares MARS at that ε with MARS at the paper's ε = 0.03 under the classic and the FM attack, with
   the no-defense runs for the ACC cost, and applies the selection rule (lowest mean ASR at ≤ 2 points of ACC).

    python benchmarks/mars_epsilon.py [--jobs 2]

Writes data/tables/mars_validation_quick.csv (+ .provenance.json).
"""

import argparse

import pandas as pd

from paper_repro.options import RunOptions
from paper_repro.studies.heldout import heldout_study, heldout_summary, select_variant
from paper_repro.tables import table_path


def main(jobs: int) -> None:
    cal = pd.read_csv(table_path("mars_calibration", "quick"))
    eps = float(cal["centre_distance"].max())
    variants = {"mars": ("mars", {}), f"mars eps{eps:.3g}": ("mars", {"epsilon": round(eps, 4)})}
    df = heldout_study(
        "quick",
        ("validation",),
        ("none",),
        (0, 1, 2),
        attacks=("classic", "fm"),
        variants=variants,
        table="mars_validation",
        options=RunOptions.for_profile("quick", jobs=jobs, ledger=True),
    )
    for attack, sub in df.groupby("attack"):
        best, table = select_variant(sub)
        print(f"--- {attack}\n{table.round(3).to_string(index=False)}\nchosen by the rule: {best}")
    cols = ["attack", "defense", "n", "acc_mean", "asr_mean", "asr_lo", "asr_hi", "tpr_mean", "fpr_mean"]
    summary = heldout_summary(df)
    print(summary[[c for c in cols if c in summary]].round(3).to_string(index=False))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    main(p.parse_args().jobs)
