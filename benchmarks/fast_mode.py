"""The fast mode (bf16) against the fp32 reference, side by side in one process: speed and agreement.

For each held-out seed, the validation setting (FM patch attack, Dirichlet 0.5) without defense and with act_bound,
once in fp32 and once in bf16 (interleaved seed by seed, so that load drifts hit both alike; ``--fresh`` runs into
an empty results folder so that nothing is served from a cache). Reports

- seconds: per run, initial training + every round (local, aggregation, fusion, defense, evaluation), and the
  bf16/fp32 ratio of their sums;
- agreement: per defense and metric, the fp32 mean with its 95 % seed interval, the bf16 mean, the difference in
  units of the fp32 seed standard deviation, and whether the bf16 mean lies inside the fp32 interval.

    python benchmarks/fast_mode.py --seeds 10 11 12          # ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import pandas as pd
import torch

import paper_repro as pr
from paper_repro.metrics import summarise
from paper_repro.studies.heldout import setting_config
from paper_repro.tables import seed_intervals

OUT = Path(__file__).parent / "results" / "fast_mode_cpu.json"
SECONDS = ("init_seconds", "local_seconds", "aggregate_seconds", "fusion_seconds", "defense_seconds", "eval_seconds")


def run_seconds(h: pd.DataFrame) -> float:
    return float(h[[c for c in SECONDS if c in h]].sum().sum())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    p.add_argument("--defenses", nargs="+", default=["none", "act_bound"])
    p.add_argument("--fresh", action="store_true", help="run into a new results folder (no cached run served)")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    results = tempfile.mkdtemp(prefix="fast_mode_") if a.fresh else None
    # no shared training: every run trains, so that its seconds are its own
    rows = []
    for seed in a.seeds:
        for d in a.defenses:
            cfg = setting_config("quick", "validation", d, seed)
            for mode in ("fp32", "bf16"):
                opts = pr.RunOptions.for_profile("quick", fast=mode == "bf16", share_training=False)
                r = pr.run_experiment(cfg, results_dir=results, progress=False, options=opts)
                rows.append(
                    {
                        "mode": mode,
                        "defense": d,
                        "seed": seed,
                        **summarise(r.history),
                        "seconds": run_seconds(r.history),
                        "run": r.run_dir.name,
                    }
                )
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    s = seed_intervals(df, by=("mode", "defense")).set_index(["mode", "defense"])
    agreement = []
    for d in a.defenses:
        for m in ("acc", "asr", "acc_client_mean"):
            ref, fast = s.loc[("fp32", d)], s.loc[("bf16", d)]
            sd = ref[f"{m}_std"]
            agreement.append(
                {
                    "defense": d,
                    "metric": m,
                    "fp32_mean": ref[f"{m}_mean"],
                    "fp32_lo": ref[f"{m}_lo"],
                    "fp32_hi": ref[f"{m}_hi"],
                    "bf16_mean": fast[f"{m}_mean"],
                    "diff_in_fp32_sd": (fast[f"{m}_mean"] - ref[f"{m}_mean"]) / sd if sd else None,
                    "inside_fp32_interval": bool(ref[f"{m}_lo"] <= fast[f"{m}_mean"] <= ref[f"{m}_hi"]),
                }
            )
    sec = df.groupby("mode")["seconds"].sum()
    out = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "seeds": a.seeds,
        "runs": rows,
        "agreement": agreement,
        "seconds": sec.to_dict(),
        "bf16_over_fp32_seconds": float(sec["bf16"] / sec["fp32"]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1, default=float))
    print(pd.DataFrame(agreement).round(3).to_string(index=False))
    print(f"bf16/fp32 seconds: {out['bf16_over_fp32_seconds']:.2f}")
    return out


if __name__ == "__main__":
    main()
