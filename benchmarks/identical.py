"""Do two versions of the code give the same numbers? Runs every attack × defense in the smoke profile (and, with
``--quick``, four quick cells) into a fresh results folder and writes every run's per-round metrics (no timing
columns) to one CSV; ``--compare A B`` says whether two such CSVs agree bit for bit, cell by cell.

Used to prove that a refactoring changes no number: run it at the old commit (from a ``git worktree``) and at the new
one, then compare::

    git worktree add /tmp/old <old commit>
    (cd /tmp/old && PYTHONPATH=$PWD python benchmarks/identical.py /tmp/old.csv --quick)
    python benchmarks/identical.py /tmp/new.csv --quick
    python benchmarks/identical.py --compare /tmp/old.csv /tmp/new.csv

Smoke: ~190 tiny runs, a few minutes on 2 cores; ``--quick`` adds four Fashion-MNIST runs (~4 min).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings

import pandas as pd

QUICK_CELLS = [("none", "none"), ("classic", "none"), ("fm", "none"), ("fm", "act_bound")]
"""(attack, defense) of the quick cells, IID, seed 0: the run ledger's four committed quick records."""
SKIP = ("seconds", "init_cached", "shared_training")


def _rows(res, cell: dict) -> list[dict]:
    cols = [c for c in res.history.columns if not any(s in c for s in SKIP)]
    return [
        {**cell, **{k: v for k, v in r.items() if k not in ("attack", "defense", "seed")}}
        for r in res.history[cols].to_dict("records")
    ]


def collect(quick: bool) -> pd.DataFrame:
    from paper_repro import RunOptions, attacks, defenses, load_config, run_experiment
    from paper_repro.config import ConfigError

    out: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        cells = [("smoke", a, d) for a in attacks.names() for d in defenses.names()]
        cells += [("quick", a, d) for a, d in QUICK_CELLS] if quick else []
        for i, (profile, a, d) in enumerate(cells):
            cell = {"profile": profile, "attack": a, "defense": d}
            try:
                cfg = load_config(profile, attack={"kind": a}, defense={"name": d}, seed=0)
            except (ConfigError, ValueError) as e:
                out.append({**cell, "status": f"refused: {str(e)[:60]}"})
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = run_experiment(cfg, tmp, progress=False, options=RunOptions.for_profile(profile))
            out.extend(_rows(res, cell))
            print(
                f"[{i + 1}/{len(cells)}] {profile} {a} × {d}: final ASR {res.history['asr'].iloc[-1]:.4f}",
                file=sys.stderr,
            )
    return pd.DataFrame(out)


def compare(a: str, b: str) -> int:
    x, y = pd.read_csv(a), pd.read_csv(b)
    key = ["profile", "attack", "defense", "round"]
    cols = sorted((set(x.columns) & set(y.columns)) - set(key))
    m = x.merge(y, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    only = m[m["_merge"] != "both"]
    differ = [
        (c, int((~((m[f"{c}_a"] == m[f"{c}_b"]) | (m[f"{c}_a"].isna() & m[f"{c}_b"].isna()))).sum())) for c in cols
    ]
    differ = [(c, n) for c, n in differ if n]
    print(
        f"{len(m)} rows; {len(only)} in one file only; columns compared: {len(cols)}; "
        f"only in {a}: {sorted(set(x.columns) - set(y.columns))}; "
        f"only in {b}: {sorted(set(y.columns) - set(x.columns))}"
    )
    for c, n in differ:
        print(f"  {c}: {n} rows differ")
    print("bit-identical" if not differ and only.empty else "DIFFERENT")
    return 0 if not differ and only.empty else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="CSV to write")
    p.add_argument("--quick", action="store_true", help="also the four quick cells")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = p.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    collect(args.quick).to_csv(args.out, index=False)
