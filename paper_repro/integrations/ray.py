"""Many runs on a Ray cluster (``RunOptions(backend="ray")``; Ray comes with ``pip install -e '.[flower]'``).

One Ray task per run, asking for ``cpus_per_run`` CPUs (and a GPU when the run's device is cuda). A task writes its
run folder into the shared results folder exactly as a local run does (atomically: a run is visible only once
complete), so a run that already finished is served from its folder, and a task whose worker dies is retried by
Ray (``max_retries``) without anything half-written being counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import ray

from ..options import RunOptions
from ..results import RunResult

FAULT_ONCE = "PAPER_REPRO_RAY_FAULT_ONCE"
"""Fault injection for the tests: when this variable names a file that does not exist yet, the first task to see it
creates the file and kills its own worker process, as a lost node would."""
MAX_RETRIES = 3


def _task(run_one: Callable[[tuple], RunResult], args: tuple, threads: int) -> RunResult:
    import torch

    marker = os.environ.get(FAULT_ONCE)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker dies mid-run
    torch.set_num_threads(threads)
    return run_one(args)


def connect(opts: RunOptions) -> None:
    """Join ``opts.address`` (or start Ray on this machine), unless this process is already connected."""
    if not ray.is_initialized():
        env = {
            k: os.environ[k]
            for k in (FAULT_ONCE, "PAPER_REPRO_DATA", "PAPER_REPRO_CACHE", "PAPER_REPRO_RESULTS", "HF_HUB_OFFLINE")
            if k in os.environ
        }
        ray.init(
            address=opts.address or None, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
        )


def run_on_ray(
    jobs: list[tuple[int, tuple]], opts: RunOptions, run_one: Callable[[tuple], RunResult]
) -> Iterator[tuple[int, RunResult]]:
    """Run ``run_one(args)`` for ``(position, args)`` pairs as Ray tasks; yield (position, result) as they
    finish."""
    connect(opts)
    gpus = 1 if opts.device.startswith("cuda") else 0
    task = ray.remote(num_cpus=opts.cpus_per_run, num_gpus=gpus, max_retries=MAX_RETRIES)(_task)
    pending = {task.remote(run_one, args, opts.cpus_per_run): i for i, args in jobs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        ref = done[0]
        yield pending.pop(ref), ray.get(ref)
