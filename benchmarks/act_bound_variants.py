"""act_bound's variants under the evaluation protocol (docs/protocol.md), quick profile, FM attack:

1. validation: the validation setting, seeds 0-2 → the selection rule (``studies.heldout.select_variant``) picks one;
2. development: validation setting, SIG, random patch and β = 0.1 at seeds 10-12 (looked at while diagnosing);
3. held-out: target class 7 and 10 % poison at seeds 13-14, never looked at before the choice.

    python benchmarks/act_bound_variants.py [--jobs 2]

Writes data/tables/act_bound_{validation,development,heldout}_quick.csv (+ .provenance.json) and prints the choice
and the mean ± 95 % interval per cell. Post-fusion defenses replay the no-defense training: each setting × seed is
trained once.
"""
import argparse

from paper_repro.options import RunOptions
from paper_repro.studies.heldout import ACT_BOUND_VARIANTS, heldout_study, heldout_summary, select_variant

STAGES = {"validation": (("validation",), (0, 1, 2)),
          "development": (("validation", "sig", "random_patch", "beta0.1"), (10, 11, 12)),
          "heldout": (("target7", "poison0.1"), (13, 14))}


def main(jobs: int) -> None:
    opts = RunOptions.for_profile("quick", jobs=jobs)
    cols = ["setting", "defense", "n", "acc_mean", "asr_mean", "asr_lo", "asr_hi", "acc_triggered_mean"]
    for stage, (settings, seeds) in STAGES.items():
        df = heldout_study("quick", settings, ("none",), seeds, variants=ACT_BOUND_VARIANTS,
                           table=f"act_bound_{stage}", options=opts)
        if stage == "validation":
            best, table = select_variant(df)
            print(table.round(3).to_string(index=False), f"\nchosen by the rule: {best}\n", flush=True)
        print(f"--- {stage}\n" + heldout_summary(df)[cols].round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    main(p.parse_args().jobs)
