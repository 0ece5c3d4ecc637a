"""MMAC (and MM-BM, act_bound) checked in MMAC's own setting before they are used in FL (a baseline is judged at
its best): a model trained **centrally** on BadNets-poisoned real data (10 % of each non-target class, the 3×3 corner
patch, target 0), then each defense fitted on a small **clean** set of real images (50 per class, as MMAC's clean
set), as its paper does; ACC and ASR on held-out real test images. If MMAC does not remove the backdoor here, it
cannot be expected to in FM-integrated FL; if it does, a failure in FL is the setting's, not the code's.

    python benchmarks/mmac_centralised.py [--seeds 0 1 2] [--epochs 3]

Clean fitting images from the test images of even index, ACC/ASR on the odd ones (no overlap). Writes
data/tables/mmac_centralised_quick.csv (one row per seed and defense) and prints the means; it is not made of FL
runs, so it is written by this script and not through the run ledger. Quick profile's model and client pool.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import paper_repro as pr
from paper_repro.defenses import RoundContext
from paper_repro.models import build_model
from paper_repro.rng import np_rng, torch_gen
from paper_repro.splits import run_splits, test_half
from paper_repro.tables import table_path, write_csv
from paper_repro.training import accuracy, train_supervised
from paper_repro.triggers import Trigger, asr_set, poison

DEFENSES = ("none", "mmac", "mm_bm", "act_bound")


def one_seed(seed: int, epochs: int) -> list[dict]:
    cfg = pr.load_config("quick", seed=seed)
    splits = run_splits(cfg)
    trigger, target = Trigger("badnets", 3), 0
    train, _ = poison(splits.clients, trigger, target, 0.1, np_rng(seed, "mmac_centralised_poison"))
    even, odd = test_half(splits.test, "even"), test_half(splits.test, "odd")
    pick = np.concatenate([np.flatnonzero(even.y == c)[:50] for c in range(even.num_classes)])
    clean = even.subset(pick)
    x, y = train.tensors()
    model = build_model(cfg.model.name, x.shape[1:], train.num_classes, seed)
    t0 = time.perf_counter()
    train_supervised(model, x, y, epochs, cfg.fl.lr, cfg.fl.momentum, cfg.fl.batch_size, torch_gen(seed, "central"))
    train_s = time.perf_counter() - t0
    xt, yt = odd.tensors()
    trig = asr_set(odd, trigger, target)
    xa, _ = trig.tensors()
    ya = torch.full((len(xa),), target)
    rows = []
    for name in DEFENSES:
        t = time.perf_counter()
        served = model
        if name != "none":
            ctx = RoundContext(1, np.array([0]), model, clean, torch_gen(seed, "central_defense"), num_rounds=1)
            served = pr.defenses.get(name).after_fusion(model, ctx)
        rows.append(
            {
                "seed": seed,
                "defense": name,
                "acc": accuracy(served, xt, yt),
                "asr": accuracy(served, xa, ya),
                "train_seconds": round(train_s, 1),
                "defense_seconds": round(time.perf_counter() - t, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    df = pd.DataFrame([r for s in a.seeds for r in one_seed(s, a.epochs)])
    write_csv(df, table_path("mmac_centralised", "quick"), "%.5g")
    print(df.groupby("defense", sort=False)[["acc", "asr", "defense_seconds"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
