"""The price of running on Flower and Ray, measured side by side in one process (not a test):

1. seconds per round of one quick run (FM attack, no defense, IID, seed 0) on the in-process loop and through the
   Flower strategy (simulation engine, one Ray worker per client at a time), both with one torch thread per client;
   the Flower run's extra time is split into Ray start-up (before round 1) and per-round messaging/serialisation;
2. grid throughput (runs per minute) of ``--runs`` quick runs on a local Ray cluster with 1 and with 2 workers
   (``cpus_per_run`` 2 and 1), against the local backend with 1 and 2 jobs.

    python benchmarks/flower_engine.py [--runs 4] [--out benchmarks/results/flower_cpu.json]

Each measurement uses a fresh results folder, so nothing is served from a cache.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import paper_repro as pr


def one_run(engine: str, where: Path) -> dict:
    cfg = pr.load_config("quick", attack={"kind": "fm"}, seed=0)
    opts = pr.RunOptions.for_profile("quick", engine=engine, threads=1, share_training=False)
    t = time.perf_counter()
    res = pr.run_experiment(cfg, results_dir=where / engine, progress=False, options=opts)
    total = time.perf_counter() - t
    rounds = res.history[res.history["round"] > 0]
    return {
        "engine": engine,
        "total_seconds": total,
        "seconds_per_round": float(rounds["round_seconds"].median()),
        "local_seconds_per_round": float(rounds["local_seconds"].median()),
        "server_seconds_per_round": float((rounds["round_seconds"] - rounds["local_seconds"]).median()),
        "final_acc": float(res.final["acc"]),
        "final_asr": float(res.final["asr"]),
    }


def throughput(backend: str, parallel: int, runs: int, where: Path) -> dict:
    cfgs = [
        pr.load_config("quick", attack={"kind": "classic"}, defense={"name": "median"}, seed=s)
        for s in range(100, 100 + runs)
    ]
    extra = {"cpus_per_run": 2 // parallel} if backend == "ray" else {"jobs": parallel}
    opts = pr.RunOptions.for_profile("quick", backend=backend, **extra)
    t = time.perf_counter()
    pr.run_many(cfgs, where / f"{backend}{parallel}", progress=False, options=opts)
    minutes = (time.perf_counter() - t) / 60
    if backend == "ray":
        import ray

        ray.shutdown()
    return {
        "backend": backend,
        "parallel": parallel,
        "runs": runs,
        "minutes": minutes,
        "runs_per_minute": runs / minutes,
    }


def main(runs: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        engines = [one_run(e, where) for e in ("loop", "flower")]
        grid = [throughput(b, p, runs, where) for b in ("local", "ray") for p in (1, 2)]
    loop, flower = engines
    res = {
        "engines": engines,
        "grid": grid,
        "flower_over_loop_per_round": flower["seconds_per_round"] / loop["seconds_per_round"],
        "flower_startup_seconds": flower["total_seconds"] - 10 * flower["seconds_per_round"],
        "same_final_numbers": bool(
            np.isclose(loop["final_acc"], flower["final_acc"]) and np.isclose(loop["final_asr"], flower["final_asr"])
        ),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/flower_cpu.json"))
    a = p.parse_args()
    main(a.runs, a.out)
