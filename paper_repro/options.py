"""How a run executes, kept apart from what it computes (the science config): device, local-training engine,
evaluation batch, training sharing, compilation, threads and parallel jobs. None of these is part of a run's key,
because none changes results beyond float rounding (tests compare them side by side)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from .config import plain

ENGINES = ("auto", "loop", "threads", "batched", "flower")
BACKENDS = ("local", "ray")
DEVICE = re.compile(r"(cpu|mps|meta|(cuda|xpu)(:\d+)?)")


class OptionsError(ValueError):
    """A run option is invalid; the message names the option and the fix."""


@dataclass(frozen=True)
class RunOptions:
    """Execution settings of :func:`paper_repro.run_experiment` and the runners built on it."""

    device: str = "cpu"
    """torch device the run trains and evaluates on (cpu, cuda, cuda:1, ...)."""
    engine: str = "auto"
    """Local training: loop (one client after another, the reference) | threads (the same loop, as many clients at
    once as torch has threads, each client on one thread: a client's numbers do not depend on the machine's core
    count) | batched (the round's clients as one vmapped computation) | auto (batched on a GPU, threads elsewhere)
    | flower (the whole run through Flower's simulation engine, one Ray worker per
    client at a time, each client trained by the loop; needs ``pip install -e '.[flower]'``). All agree up to float
    rounding (tests/test_local_training.py; Flower: tests/test_flower.py)."""
    eval_batch_size: int = 32
    """Images per forward pass in evaluation, for the teachers' logits and in defenses. On a CPU a few dozen images
    stay in cache (~3× faster than 1,000); on a GPU larger is better."""
    share_training: bool = True
    """A run whose defense acts only at step 5 on a view of the fused model (``Defense.trains_like_none``) is
    computed on the training of the same run without a defense, side by side with the other such defenses of the
    batch, instead of training again (same results: tests/test_runner.py)."""
    compile: bool = False
    """Sample the FM through ``torch.compile`` (a C++ compiler is needed on CPU; ~1 min to compile, then faster)."""
    threads: int = 0
    """torch intra-op threads for the run (0: leave torch's setting); restored afterwards."""
    jobs: int = 1
    """Runs side by side in worker processes (:func:`paper_repro.runner.run_many`); each gets an equal share of the
    threads. 1 reproduces the committed tables bit for bit."""
    backend: str = "local"
    """Where :func:`~paper_repro.runner.run_many` runs: local (this machine, ``jobs`` worker processes) | ray (a Ray
    cluster: one task per run, ``cpus_per_run`` CPUs and a GPU if the device is cuda; the results folder must be
    shared by every node)."""
    address: str = ""
    """Ray cluster to join (``HOST:PORT`` of its head, or ``auto``); empty: start a Ray instance on this machine."""
    cpus_per_run: int = 1
    """CPUs (and torch threads) a Ray task asks for."""
    fast: bool = False
    """Run every config in the fast mode, ``fl.precision="bf16"`` (bf16 autocast in the initial, local and fusion
    training and in evaluation). Unlike the other options this changes the numbers, so the runs get their own keys
    and folders; how far they are from fp32 is measured in docs/speed.md. The CLI's ``--fast`` (``make ... FAST=1``)
    writes their tables under ``data/tables/fast/``."""

    ledger: bool = False
    """Also record every finished run (computed or served) in the run ledger (``data/ledger``), the committed record
    that tables are rebuilt from: what ``python -m paper_repro recompute`` does. Runs are served from the ledger
    either way."""

    def __post_init__(self) -> None:
        for f in fields(self):  # numpy scalars as the Python values they hold (np.int64(2) jobs are 2 jobs)
            object.__setattr__(self, f.name, plain(getattr(self, f.name)))
        if self.engine not in ENGINES:
            raise OptionsError(f"engine={self.engine!r} is unknown; choose one of {list(ENGINES)}")
        if not isinstance(self.device, str) or not DEVICE.fullmatch(self.device):
            raise OptionsError(f"device={self.device!r} is not a torch device; give 'cpu', 'cuda', 'cuda:1', 'mps'")
        if self.backend not in BACKENDS:
            raise OptionsError(f"backend={self.backend!r} is unknown; choose one of {list(BACKENDS)}")
        if not isinstance(self.address, str):
            raise OptionsError(f"address={self.address!r} must be a string: HOST:PORT of a Ray head, or auto")
        for name, low in (("eval_batch_size", 1), ("jobs", 1), ("threads", 0), ("cpus_per_run", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise OptionsError(
                    f"{name}={v!r} must be an integer >= {low}"
                    + (" (0 = torch's default)" if name == "threads" else "")
                )
        for name in ("share_training", "compile", "fast", "ledger"):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"{name}={getattr(self, name)!r} must be True or False")

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> RunOptions:
        """The defaults of a profile (``paper``: a GPU and large evaluation batches), with ``overrides`` applied."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise OptionsError(f"unknown run option(s) {sorted(unknown)}; known: {sorted(known)}")
        return replace(cls(**_PROFILE_OPTIONS.get(profile, {})), **overrides)


def options_for(profile: str, options: RunOptions | None = None) -> RunOptions:
    """The run options: those given, else ``profile``'s defaults. The one place that makes default options."""
    return options if options is not None else RunOptions.for_profile(profile)


_PROFILE_OPTIONS = {
    "smoke": {"eval_batch_size": 200},
    "quick": {"eval_batch_size": 32},
    "paper": {"device": "cuda", "eval_batch_size": 1000},
}
