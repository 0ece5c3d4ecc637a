"""Command line: ``python -m paper_repro.fm train --profile quick --out data/fm/fashion_mnist_ddpm [--steps N]
[--dataset fashion_mnist_textured]``;
``python -m paper_repro.fm ship --profile quick --sizes 200 100 50`` draws (or takes from this machine's cache) the
synthetic sets a fresh clone should not have to draw and writes them, with their keys, into ``data/synthetic``."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..cliargs import PROFILES, nonneg_int, pos_int, writable_dir
from ..config import DATASETS
from ..profiles import load_config
from ..splits import run_splits
from .ddpm import ClassConditionalDDPM, DDPMTrainConfig

DIGEST_ROLE = "not computing"  # codehash: see its module docstring


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m paper_repro.fm")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the embedded class-conditional DDPM on the public split")
    t.add_argument("--profile", default="quick", choices=PROFILES, help="whose public split to train on (quick)")
    t.add_argument("--out", required=True, help="folder for the weights (created)")
    t.add_argument("--steps", type=pos_int, default=DDPMTrainConfig.steps, help="optimiser steps")
    t.add_argument(
        "--dataset", default=None, choices=DATASETS, help="whose public split (default: the profile's dataset)"
    )
    t.add_argument(
        "--seed", type=nonneg_int, default=0, help="seed of FM training (the public split uses data.split_seed)"
    )
    s = sub.add_parser("ship", help="draw the profile's synthetic sets into data/synthetic (committed, keyed)")
    s.add_argument("--profile", default="quick", choices=PROFILES, help="whose FM and sampler settings (quick)")
    s.add_argument(
        "--sizes",
        type=pos_int,
        nargs="+",
        default=None,
        help="images per class (default: the profile's; the size ablation adds 100 50)",
    )
    a = p.parse_args(argv)
    if a.cmd == "ship":
        import time

        from .synthetic import ship_synthetic

        for n in a.sizes or [load_config(a.profile).fm.n_per_class]:
            cfg = load_config(a.profile, fm={"n_per_class": n})
            t = time.perf_counter()
            out = ship_synthetic(cfg, run_splits(cfg).public)
            print(f"n_per_class={n}: {out} ({time.perf_counter() - t:.0f} s)")
        return
    if why := writable_dir(a.out):
        p.error(f"--out: {why}")
    data = {"dataset": a.dataset} if a.dataset else {}
    public = run_splits(load_config(a.profile, data=data, fm={"checkpoint": a.out})).public
    fm = ClassConditionalDDPM.train(public, DDPMTrainConfig(steps=a.steps, seed=a.seed), progress=False)
    command = "python -m paper_repro.fm " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    fm.save(a.out, command=command)
    print(f"saved {a.out}: {fm.info}")


if __name__ == "__main__":
    main()
