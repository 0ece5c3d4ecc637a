"""Command line: ``python -m paper_repro.fm train --profile quick --out data/fm/fashion_mnist_ddpm [--steps N]``."""
from __future__ import annotations

import argparse
import shlex
import sys

from ..data import public_splits
from ..profiles import load_config
from .ddpm import ClassConditionalDDPM, DDPMTrainConfig


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m paper_repro.fm")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the embedded class-conditional DDPM on the public split")
    t.add_argument("--profile", default="quick")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=DDPMTrainConfig.steps)
    t.add_argument("--seed", type=int, default=0, help="seed of FM training (the public split uses data.split_seed)")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps {a.steps}: give at least 1 optimiser step")
    public = public_splits(load_config(a.profile)).public
    fm = ClassConditionalDDPM.train(public, DDPMTrainConfig(steps=a.steps, seed=a.seed), progress=False)
    command = "python -m paper_repro.fm " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    fm.save(a.out, command=command)
    print(f"saved {a.out}: {fm.info}")


if __name__ == "__main__":
    main()
