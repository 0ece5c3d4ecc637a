"""Running experiments, one path for one config and for many: each config is *planned* (validated, its defense
built, its key computed from the config and the keys of its inputs, so nothing is loaded or drawn yet), *served*
from its run folder or the run ledger when that run exists, and otherwise *computed*. A run whose defense acts only
after fusion (``Defense.trains_like_none``) is computed on the training of the same run without a defense, side by
side with every other such defense of the batch (:func:`paper_repro.fl.run_federated`'s ``alongside``): one training,
one run folder and key per defense."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from . import defenses, ledger
from .attacks import Attack
from .cliargs import writable_dir
from .codehash import run_code_files
from .config import Config, DefenseConfig
from .execution import allocator_env, check_device, threads, worker_init
from .fl import FLOutput, run_federated
from .initial import cached_initial_model, initial_model_key
from .inputs import Prepared, prepare, run_hashes
from .options import RunOptions, options_for
from .profiles import build_checked
from .progress import tqdm
from .results import (
    MODEL,
    PROVENANCE,
    RunResult,
    clean_leftovers,
    damage,
    git_state,
    holds,
    load_results,
    machine,
    run_key,
    run_name,
    versions,
    write_run,
)
from .store import cache_dir, default_results_dir

__all__ = ["run_experiment", "run_many", "plan_run", "final_model", "load_results"]


@dataclass(frozen=True)
class Run:
    """One planned run, known before any data is loaded: its (validated) config, how it executes, its attack and
    defense (built once, here), what besides the config makes it (:func:`paper_repro.inputs.run_hashes`), its key
    and its folder."""

    cfg: Config
    opts: RunOptions
    attack: Attack
    defense: defenses.Defense
    hashes: dict
    key: str
    run_dir: Path

    @property
    def training(self) -> Config:
        """The config whose training this run uses: the same run without a defense when its defense acts only after
        fusion (and ``share_training``), else its own."""
        return (
            replace(self.cfg, defense=DefenseConfig())
            if shares_training(self.cfg, self.opts, self.defense)
            else self.cfg
        )


@dataclass(frozen=True)
class Job:
    """One training and the runs served from it: ``lead`` (the run it is the training of; written unless
    ``write_lead`` is False, when it exists already) and ``alongside`` (post-fusion defenses on the same training)."""

    lead: Run
    alongside: tuple[Run, ...] = ()
    write_lead: bool = True
    progress: bool = False
    force: bool = False
    keep_model: bool = False


def in_fast_mode(cfg: Config) -> Config:
    """``cfg`` with ``fl.precision="bf16"``: what :attr:`RunOptions.fast` runs."""
    return replace(cfg, fl=replace(cfg.fl, precision="bf16"))


def shares_training(cfg: Config, opts: RunOptions, defense: defenses.Defense | None = None) -> bool:
    """Whether ``cfg``'s run is computed on the training of its no-defense run (``defense``: its instance, if built)."""
    if not opts.share_training or cfg.defense.name == "none" or opts.engine == "flower":
        return False
    return (defense or defenses.get(cfg.defense.name, **cfg.defense.params)).trains_like_none


def plan_run(cfg: Config, results_dir: str | Path | None = None, options: RunOptions | None = None) -> Run:
    """Validate ``cfg`` and the options (device included), build its defense and key it; loads no data."""
    opts = options_for(cfg.profile, options)
    cfg = in_fast_mode(cfg) if opts.fast else cfg
    attack, defense = build_checked(cfg)
    check_device(opts.device)
    hashes = run_hashes(cfg)
    key = run_key(cfg, hashes)
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    return Run(cfg, opts, attack, defense, hashes, key, folder / run_name(cfg, key))


def served(run: Run, keep_model: bool = False) -> RunResult | None:
    """The finished run from its folder (or materialised from the ledger into it), or None when it must be computed
    (absent, incomplete: said in a warning, or without the saved model that ``keep_model`` asks for)."""
    folder, run_dir = run.run_dir.parent, run.run_dir
    if folder.is_dir():
        clean_leftovers(folder)  # puts back a run whose forced rerun was killed mid-swap
    if not run_dir.exists() and not writable_dir(folder):
        ledger.materialise(run_dir.name, folder)  # a run recorded in the ledger is served like a folder
    if not run_dir.exists():
        return None
    if problems := damage(run_dir):
        warnings.warn(f"{run_dir} is not a complete run ({'; '.join(problems)}): recomputing it", stacklevel=3)
        return None
    if keep_model and not holds(run_dir, MODEL):
        return None
    if run.opts.ledger:
        ledger.write_record(run_dir)
    return RunResult.load(run_dir)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _attack_record(attack) -> dict:
    """What the attack reports about itself (its own seconds, checks on its trigger; a 3DFed-style attacker's
    acceptance log), JSON-ready."""
    rec = {"info": getattr(attack, "info", {}) or {}}
    if getattr(attack, "log", None):
        rec["log"] = attack.log
    return json.loads(json.dumps(rec, default=float))


def _write(
    run: Run, prep: Prepared, out: FLOutput, inputs: dict, times: tuple[float, str], keep_model: bool
) -> RunResult:
    """Write one computed run's folder (and its ledger record when asked)."""
    t0, started = times
    history = pd.DataFrame(out.history)
    for col, value in (("seed", run.cfg.seed), ("defense", run.cfg.defense.name), ("attack", run.cfg.attack.kind)):
        history.insert(0, col, value)
    history["total_seconds"] = time.perf_counter() - t0
    attack = prep.inputs.attack
    meta = {
        "config": run.cfg.to_dict(),
        "config_hash": run.key,
        "hashes": run.hashes,
        "provenance": PROVENANCE,
        "options": run.opts.__dict__,
        "versions": versions(),
        "git": git_state(),
        "started": started,
        "finished": _now(),
        "inputs": inputs,
        "attack": _attack_record(attack),
        "code_files": run_code_files(type(attack), defenses.REGISTRY.lookup(run.cfg.defense.name)),
        "machine": machine(),
    }
    indices = {
        "fm_poisoned": prep.fm_poisoned,
        "malicious": prep.malicious,
        **{f"partition_{k}": p for k, p in enumerate(prep.partition)},
        **{f"client_poisoned_{k}": v for k, v in attack.poisoned_indices().items()},
    }
    extra = {MODEL: lambda p: torch.save(out.fused.state_dict(), p)} if keep_model else {}
    write_run(run.run_dir, meta, history, indices, out.flagged, extra)
    if run.opts.ledger:
        ledger.write_record(run.run_dir)
    return RunResult(history, run.run_dir)


def compute(job: Job) -> list[RunResult]:
    """Prepare the lead run's inputs, train once, serve every run of the job from that training, and write their
    folders; results in the order lead, alongside."""
    lead = job.lead
    with threads(lead.opts.threads):
        t0, started = time.perf_counter(), _now()
        prep = prepare(lead.cfg, job.progress, lead.opts, refresh=job.force, attack=lead.attack)
        inputs = {
            "synthetic_digest": prep.digests["synthetic"],
            "synthetic_key": lead.hashes["synthetic"],
            "digests": prep.digests,
            "initial_model": None,
            "trained_with": None,
        }
        if lead.opts.engine == "flower":
            from .integrations.flower import run_flower  # the optional extra: imported only when asked for

            out, init_cached = run_flower(lead.cfg, lead.opts, lead.defense), False
        else:
            model, init_cached = cached_initial_model(
                lead.cfg, prep.inputs, cache_dir() / "init", lead.opts.device, job.force
            )
            inputs["initial_model"] = initial_model_key(lead.cfg, prep.inputs)
            out = run_federated(
                lead.cfg,
                prep.inputs,
                lead.defense,
                lead.opts,
                job.progress,
                initial_model=model,
                alongside={r.key: r.defense for r in job.alongside},
            )
        for o in (out, *out.alongside.values()):
            o.history[0]["init_cached"] = init_cached
        results = [
            _write(lead, prep, out, inputs, (t0, started), job.keep_model)
            if job.write_lead
            else RunResult.load(lead.run_dir)
        ]
        shared = {**inputs, "trained_with": lead.run_dir.name}
        results += [_write(r, prep, out.alongside[r.key], shared, (t0, started), job.keep_model) for r in job.alongside]
    return results


def jobs_for(todo: list[Run], progress: bool = False, force: bool = False, keep_model: bool = False) -> list[Job]:
    """The runs to compute, grouped by the training they use (one :class:`Job` per training; a post-fusion
    defense's no-defense run is planned, and written too unless it exists already)."""
    groups: dict[str, tuple[Run, list[Run], bool]] = {}
    for run in todo:
        if run.training == run.cfg:
            lead, side = run, None
        else:
            lead, side = plan_run(run.training, run.run_dir.parent, run.opts), run
        had = groups.get(lead.key)
        write = lead is run or (had is not None and had[2]) or force or served(lead) is None
        sides = [*(had[1] if had else []), *([side] if side else [])]
        groups[lead.key] = (lead, sides, write)
    return [Job(lead, tuple(sides), write, progress, force, keep_model) for lead, sides, write in groups.values()]


def run_experiment(
    cfg: Config,
    results_dir: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
    keep_model: bool = False,
    options: RunOptions | None = None,
) -> RunResult:
    """Run one experiment, or serve it if a finished run with the same key exists (``force`` re-runs it, and every
    cached input it would read — synthetic set, initial model — into a fresh folder, and only then replaces the old
    one). ``keep_model`` also saves the final fused weights (:func:`final_model`). ``options``: how it executes
    (default: the profile's :class:`RunOptions`)."""
    return run_many(
        [cfg], results_dir, jobs=1, progress=progress, options=options, force=force, keep_model=keep_model, bar=False
    )[0]


def final_model(result: RunResult) -> dict[str, torch.Tensor]:
    """The final fused weights (a ``state_dict``) of a run computed with ``keep_model=True``."""
    return torch.load(result.run_dir / MODEL, weights_only=True)


def run_many(
    cfgs: list[Config],
    results_dir: str | Path | None = None,
    jobs: int | None = None,
    progress: bool = True,
    desc: str = "runs",
    options: RunOptions | None = None,
    force: bool = False,
    keep_model: bool = False,
    bar: bool = True,
) -> list[RunResult]:
    """:func:`run_experiment` for every config (finished ones are served), ``jobs`` trainings at a time (default
    ``options.jobs``) in worker processes with an equal share of torch's threads each; results in the order of
    ``cfgs``. Every config is validated and keyed before any work starts.

    On a CPU, small convolutions do not keep several threads busy, so two one-thread runs side by side finish
    sooner than two two-thread runs in turn (benchmarks/speed.py, part ``jobs``); the numbers agree up to float
    rounding (one thread sums in another order than two), so ``jobs=1`` is what reproduces the committed tables
    bit for bit."""
    if not cfgs:
        return []
    runs = [plan_run(c, results_dir, options) for c in cfgs]
    opts = runs[0].opts
    jobs = opts.jobs if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be an integer >= 1")
    done: dict[str, RunResult] = {}
    todo: dict[str, Run] = {}
    for run in runs:
        if run.key not in done and run.key not in todo:
            res = None if force else served(run, keep_model)
            if res is None:
                todo[run.key] = run
            else:
                done[run.key] = res
    for run in todo.values():  # refused before any work: a results folder that cannot take the new run
        if why := writable_dir(run.run_dir.parent):
            raise PermissionError(f"cannot compute {run.run_dir.name}: {why} (pass results_dir= to say where runs go)")
    work = jobs_for(list(todo.values()), progress and jobs == 1 and len(todo) == 1, force, keep_model)
    pbar = tqdm(total=len(work), desc=desc, disable=not (progress and bar))
    for job, results in _execute(work, opts, jobs):
        done.update({r.key: res for r, res in zip((job.lead, *job.alongside), results)})
        pbar.update()
    pbar.close()
    return [done[r.key] for r in runs]


def _execute(work: list[Job], opts: RunOptions, jobs: int):
    """Yield (job, its results) as the jobs finish: on Ray, in ``jobs`` worker processes, or here in turn."""
    if opts.backend == "ray":
        from .integrations.ray import run_on_ray  # the optional extra: imported only when asked for

        for i, results in run_on_ray(list(enumerate(work)), opts, compute):
            yield work[i], results
    elif jobs == 1 or len(work) <= 1:
        for job in work:
            yield job, compute(job)
    else:
        share = max(1, torch.get_num_threads() // jobs)
        with (
            allocator_env(),
            cf.ProcessPoolExecutor(jobs, mp.get_context("spawn"), worker_init, (share,)) as pool,
        ):
            futures = {pool.submit(compute, job): job for job in work}
            for f in cf.as_completed(futures):
                yield futures[f], f.result()
