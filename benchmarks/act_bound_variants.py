"""act_bound's variants under the evaluation protocol (docs/protocol.md), quick profile, FM attack:

1. validation: the validation setting, seeds 0-2 → the selection rule (``studies.heldout.select_variant``) picks one;
2. development: validation setting, SIG, random patch and β = 0.1 at seeds 10-12 (looked at while diagnosing);
3. held-out: target class 7 and 10 % poison at seeds 13-14, never looked at before the choice.

    python benchmarks/act_bound_variants.py [--jobs 2]
    python benchmarks/act_bound_variants.py --variants act_bound act_bound_dm --stages validation development \
        --table act_bound_dm      # one more candidate against the chosen default, in tables of its own

Writes data/tables/act_bound_{validation,development,heldout}_quick.csv (+ .provenance.json) and prints the choice
and the mean ± 95 % interval per cell. Post-fusion defenses are served from the no-defense training: each
setting × seed is trained once.
"""

import argparse

from paper_repro.options import RunOptions
from paper_repro.studies.heldout import ACT_BOUND_VARIANTS, heldout_study, heldout_summary, select_variant

STAGES = {
    "validation": (("validation",), (0, 1, 2)),
    "development": (("validation", "sig", "random_patch", "beta0.1"), (10, 11, 12)),
    "heldout": (("target7", "poison0.1"), (13, 14)),
}


VARIANTS = {**ACT_BOUND_VARIANTS, "act_bound_dm": ("act_bound_dm", {})}
"""The variants of the committed tables and act_bound_dm (distribution matching, tried after the choice)."""


def main(jobs: int, variants: list[str], stages: list[str], table: str) -> None:
    opts = RunOptions.for_profile("quick", jobs=jobs, ledger=True)  # committed tables: runs go to the ledger
    cols = ["setting", "defense", "n", "acc_mean", "asr_mean", "asr_lo", "asr_hi", "acc_triggered_mean"]
    for stage in stages:
        settings, seeds = STAGES[stage]
        df = heldout_study(
            "quick",
            settings,
            ("none",),
            seeds,
            variants={v: VARIANTS[v] for v in variants},
            table=f"{table}_{stage}",
            options=opts,
        )
        if stage == "validation":
            best, table = select_variant(df)
            print(table.round(3).to_string(index=False), f"\nchosen by the rule: {best}\n", flush=True)
        print(f"--- {stage}\n" + heldout_summary(df)[cols].round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(ACT_BOUND_VARIANTS), choices=list(VARIANTS))
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--table", default="act_bound", help="tables are <table>_<stage>_quick.csv")
    a = p.parse_args()
    main(a.jobs, a.variants, a.stages, a.table)
