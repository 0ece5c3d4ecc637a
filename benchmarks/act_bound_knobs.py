"""Ablation of act_bound's knobs on a fused global model (quick profile, FM and classic attack, no defense during
training, 4 rounds): final ACC/ASR of the bounded model and the seconds one fit takes.

    python benchmarks/act_bound_knobs.py                      # the variants below
    python benchmarks/act_bound_knobs.py '{"init_quantile": 0.95}' '{"sites": "all"}'
"""

import json
import sys
import time

import numpy as np
import torch

import paper_repro as pr
from paper_repro.defenses import RoundContext
from paper_repro.fl import evaluate_served, run_federated

VARIANTS = [
    {},
    {"granularity": "channel", "init_quantile": 1.0, "epochs": 10, "lr": 0.1, "c0": 0.5},  # MM-BM-like
    {"init_quantile": 0.8},
    {"init_quantile": 0.95},
    {"sites": "all"},
    {"epochs": 20, "lr": 0.05},
    {"per_class": 0},
    {"trim": 0.0},
]


def main(variants: list[dict], seed: int = 0) -> None:
    for attack in ("fm", "classic"):
        cfg = pr.load_config("quick", attack={"kind": attack}, fl={"num_rounds": 4}, seed=seed)
        prep = pr.prepare(cfg, progress=False)
        model = run_federated(cfg, prep.inputs, pr.defenses.get("none"), progress=False).model
        opts = pr.RunOptions.for_profile("quick")
        base = evaluate_served(model, cfg, prep.inputs, opts)
        print(f"{attack:8s} no defense              acc {base['acc']:.3f} asr {base['asr']:.3f}", flush=True)
        for v in variants:
            d = pr.defenses.get("act_bound", **v)
            ctx = RoundContext(
                1, np.arange(5), model, prep.inputs.synthetic_kd, torch.Generator().manual_seed(seed), "cpu", 1
            )
            t = time.perf_counter()
            served = d.after_fusion(model, ctx)
            dt = time.perf_counter() - t
            r = evaluate_served(served, cfg, prep.inputs, opts)
            print(f"{attack:8s} {json.dumps(v):60s} acc {r['acc']:.3f} asr {r['asr']:.3f}  fit {dt:.2f}s", flush=True)


if __name__ == "__main__":
    main([json.loads(a) for a in sys.argv[1:]] or VARIANTS)
