"""Command line: ``python -m paper_repro.fm train --profile quick --out data/fm/fashion_mnist_ddpm [--steps N]``."""
from __future__ import annotations

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

import argparse
import shlex
import sys

from ..cliargs import PROFILES, nonneg_int, pos_int, writable_dir
from ..data import public_splits
from ..profiles import load_config
from .ddpm import ClassConditionalDDPM, DDPMTrainConfig


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m paper_repro.fm")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the embedded class-conditional DDPM on the public split")
    t.add_argument("--profile", default="quick", choices=PROFILES, help="whose public split to train on (quick)")
    t.add_argument("--out", required=True, help="folder for the weights (created)")
    t.add_argument("--steps", type=pos_int, default=DDPMTrainConfig.steps, help="optimiser steps")
    t.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of FM training (the public split uses data.split_seed)")
    a = p.parse_args(argv)
    if why := writable_dir(a.out):
        p.error(f"--out: {why}")
    public = public_splits(load_config(a.profile)).public
    fm = ClassConditionalDDPM.train(public, DDPMTrainConfig(steps=a.steps, seed=a.seed), progress=False)
    command = "python -m paper_repro.fm " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    fm.save(a.out, command=command)
    print(f"saved {a.out}: {fm.info}")


if __name__ == "__main__":
    main()
