"""Running experiments: one config into one run folder (:func:`run_experiment`, served from the folder on a
rerun), and many configs at once (:func:`run_many`, side by side in worker processes)."""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from . import defenses, ledger
from .cliargs import writable_dir
from .codehash import run_code_files
from .config import Config, DefenseConfig
from .fl import run_federated
from .fm.synthetic import synthetic_key_hash
from .inputs import prepare
from .options import OptionsError, RunOptions
from .profiles import check_registered
from .progress import tqdm
from .replay import (
    Trajectory,
    TrajectoryError,
    TrajectoryRecorder,
    cached_initial_model,
    initial_model_key,
    replay_federated,
)
from .results import (
    PROVENANCE,
    TRAJECTORY,
    RunResult,
    clean_leftovers,
    damage,
    git_state,
    load_results,
    machine,
    run_key,
    run_name,
    versions,
    write_run,
)
from .store import cache_dir, default_results_dir

__all__ = ["run_experiment", "run_many", "training_trajectory", "keep_freed_memory", "load_results"]


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op thread count set to ``n`` (0: unchanged) for the block, restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_device(device: str) -> None:
    """Raise :class:`OptionsError` before any work when ``device`` is not available on this machine."""
    kind, _, index = device.partition(":")
    count = {"cuda": torch.cuda.device_count, "mps": lambda: int(torch.backends.mps.is_available())}.get(kind)
    if count is not None and count() <= int(index or 0):
        raise OptionsError(f"device={device!r}, but torch sees {count()} {kind} device(s) on this machine; "
                           "use RunOptions(device='cpu') (the smoke and quick profiles run on CPU)")


def _attack_record(attack) -> dict:
    """What the attack reports about itself (its own seconds, checks on its trigger; a 3DFed-style attacker's
    acceptance log), JSON-ready."""
    rec = {"info": getattr(attack, "info", {}) or {}}
    if getattr(attack, "log", None):
        rec["log"] = attack.log
    return json.loads(json.dumps(rec, default=float))


def in_fast_mode(cfg: Config) -> Config:
    """``cfg`` with ``fl.precision="bf16"``: what :attr:`RunOptions.fast` runs."""
    return replace(cfg, fl=replace(cfg.fl, precision="bf16"))


def run_experiment(cfg: Config, results_dir: str | Path | None = None, progress: bool = True, force: bool = False,
                   record_trajectory: bool = False, options: RunOptions | None = None) -> RunResult:
    """Run one experiment, or load it if a finished run with the same key exists (``force`` re-runs it, and every
    cached input it would read — synthetic set, initial model, replayed run — into a fresh folder, and only then
    replaces the old one). ``record_trajectory`` also saves the run's
    :class:`~paper_repro.replay.Trajectory` (re-running a cached run that lacks one). ``options``: how it executes
    (default: the profile's :class:`RunOptions`)."""
    opts = options or RunOptions.for_profile(cfg.profile)
    cfg = in_fast_mode(cfg) if opts.fast else cfg
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    check_registered(cfg)
    check_device(opts.device)
    defense = defenses.get(cfg.defense.name, **cfg.defense.params)
    with _threads(opts.threads):
        prep = prepare(cfg, progress, opts, refresh=force)
        key = run_key(cfg, prep.hashes)
        run_dir = results_dir / run_name(cfg, key)
        have_trajectory = not record_trajectory or (run_dir / TRAJECTORY).exists()
        if results_dir.is_dir():
            clean_leftovers(results_dir)  # puts back a run whose forced rerun was killed mid-swap
        if not run_dir.exists() and not force and not writable_dir(results_dir):
            ledger.materialise(run_dir.name, results_dir)  # a run recorded in the ledger is served like a folder
        if run_dir.exists() and not force:
            problems = damage(run_dir)
            if not problems and have_trajectory:
                if opts.ledger:
                    ledger.write_record(run_dir)
                return RunResult.load(run_dir)
            if problems:
                warnings.warn(f"{run_dir} is not a complete run ({'; '.join(problems)}): recomputing it", stacklevel=2)
        if why := writable_dir(results_dir):
            raise PermissionError(f"cannot compute {run_dir.name}: {why} (pass results_dir= to say where runs go)")
        t0, started = time.perf_counter(), _now()
        recorder = None
        inputs = {"synthetic_digest": prep.hashes["synthetic"], "synthetic_key": synthetic_key_hash(cfg),
                  "initial_model": None, "replayed_from": None}
        if _replays(cfg, opts, defense):
            base_dir, base = training_trajectory(cfg, results_dir, progress, opts, with_dir=True, force=force)
            out = replay_federated(cfg, prep.inputs, defense, base, opts, progress)
            init_cached, inputs["replayed_from"] = True, base_dir.name
        elif opts.engine == "flower":
            from .flower import run_flower  # the optional extra: imported only when asked for

            out, init_cached = run_flower(cfg, opts, defense), False
        else:
            model, init_cached = cached_initial_model(cfg, prep.inputs, cache_dir() / "init", opts.device, force)
            inputs["initial_model"] = initial_model_key(cfg, prep.inputs)
            recorder = TrajectoryRecorder(model) if record_trajectory else None
            out = run_federated(cfg, prep.inputs, defense, opts, progress, initial_model=model, on_fused=recorder)
        out.history[0]["init_cached"] = init_cached
        history = pd.DataFrame(out.history)
        history.insert(0, "seed", cfg.seed)
        history.insert(0, "defense", cfg.defense.name)
        history.insert(0, "attack", cfg.attack.kind)
        history["total_seconds"] = time.perf_counter() - t0
        meta = {"config": cfg.to_dict(), "config_hash": key, "hashes": prep.hashes, "provenance": PROVENANCE,
                "options": opts.__dict__, "versions": versions(), "git": git_state(), "started": started,
                "finished": _now(), "inputs": inputs, "attack": _attack_record(prep.inputs.attack),
                "code_files": run_code_files(type(prep.inputs.attack), defenses.REGISTRY.lookup(cfg.defense.name)),
                "machine": machine()}
        indices = {"fm_poisoned": prep.fm_poisoned, "malicious": prep.malicious,
                   **{f"partition_{k}": p for k, p in enumerate(prep.partition)},
                   **{f"client_poisoned_{k}": v for k, v in prep.inputs.attack.poisoned_indices().items()}}
        extra = {TRAJECTORY: recorder.trajectory(run_dir.name).save} if recorder is not None else {}
        write_run(run_dir, meta, history, indices, out.flagged, extra)
        if opts.ledger:
            ledger.write_record(run_dir)
    return RunResult(history, run_dir)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _replays(cfg: Config, opts: RunOptions, defense: defenses.Defense | None = None) -> bool:
    """Whether ``cfg``'s run replays its no-defense run (``defense``: its instance, if already built)."""
    if not opts.share_training or cfg.defense.name == "none" or opts.engine == "flower":
        return False
    return (defense or defenses.get(cfg.defense.name, **cfg.defense.params)).trains_like_none


def training_trajectory(cfg: Config, results_dir: str | Path | None = None, progress: bool = True,
                        options: RunOptions | None = None, with_dir: bool = False, force: bool = False):
    """The per-round weights of ``cfg`` without a defense (run, or loaded from that run's folder), which every
    defense with ``trains_like_none`` shares; with ``with_dir``, (that run's folder, trajectory)."""
    base = replace(cfg, defense=DefenseConfig())
    res = run_experiment(base, results_dir, progress, force=force, record_trajectory=True, options=options)
    problems = damage(res.run_dir, (TRAJECTORY,))
    if problems:  # e.g. a trajectory copied in from another run's folder
        warnings.warn(f"{res.run_dir / TRAJECTORY}: {'; '.join(problems)}; recomputing the run", stacklevel=2)
        res = run_experiment(base, results_dir, progress, force=True, record_trajectory=True, options=options)
    trajectory = Trajectory.load(res.run_dir / TRAJECTORY)
    if trajectory.run != res.run_dir.name:
        raise TrajectoryError(f"{res.run_dir / TRAJECTORY} was recorded by run {trajectory.run!r}, not by "
                              f"{res.run_dir.name!r}: delete that folder to recompute it")
    return (res.run_dir, trajectory) if with_dir else trajectory


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of handing them back to the OS.

    Training and bound fitting allocate and free the same activation-sized buffers thousands of times; by default
    glibc returns them, and every reuse page-faults fresh zeroed pages (mmac's fit: 32 M page faults in one quick
    run). Called by the command line and by :func:`run_many`'s workers, never on import; a process-wide allocator
    setting, harmless elsewhere. Returns False where there is no glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def _worker_init(threads: int) -> None:
    keep_freed_memory()
    torch.set_num_threads(threads)


def _run_one(args: tuple) -> RunResult:
    cfg, results_dir, record, opts = args
    return run_experiment(cfg, results_dir, progress=False, record_trajectory=record, options=opts)


def run_many(cfgs: list[Config], results_dir: str | Path | None = None, jobs: int | None = None,
             progress: bool = True, desc: str = "runs", options: RunOptions | None = None) -> list[RunResult]:
    """:func:`run_experiment` for every config (cached ones are loaded), ``jobs`` at a time (default
    ``options.jobs``) in worker processes with an equal share of torch's threads each; results in the order of
    ``cfgs``.

    On a CPU, small convolutions do not keep several threads busy, so two one-thread runs side by side finish
    sooner than two two-thread runs in turn (benchmarks/speed.py, part ``jobs``); the numbers agree up to float
    rounding (one thread sums in another order than two), so ``jobs=1`` is what reproduces the committed tables
    bit for bit. Runs that replay a no-defense run start after that run."""
    if not cfgs:
        return []
    opts = options or RunOptions.for_profile(cfgs[0].profile)
    cfgs = [in_fast_mode(c) for c in cfgs] if opts.fast else list(cfgs)
    jobs = opts.jobs if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()

    def key(c: Config) -> str:
        return json.dumps(c.to_dict(), sort_keys=True, default=list)

    bases = [replace(c, defense=DefenseConfig()) for c in cfgs if _replays(c, opts)]
    need = {key(b) for b in bases}
    first, then = [], []  # (position, args); a run that another one replays records its trajectory
    seen: dict[str, int] = {}
    for i, c in enumerate([*cfgs, *bases]):  # bases missing from cfgs run too, before their replays
        k = key(c)
        if k in seen:
            continue
        seen[k] = i
        (then if _replays(c, opts) else first).append((i, (c, results_dir, k in need, opts)))
    out: dict[int, RunResult] = {}
    bar = tqdm(total=len(first) + len(then), desc=desc, disable=not progress)
    if opts.backend == "ray":
        from .cluster import run_on_ray  # the optional extra: imported only when asked for

        for phase in (first, then):
            for i, result in run_on_ray(phase, opts, _run_one):
                out[i] = result
                bar.update()
    elif jobs == 1:
        for i, args in first + then:
            out[i] = _run_one(args)
            bar.update()
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        threads = max(1, torch.get_num_threads() // jobs)
        with cf.ProcessPoolExecutor(jobs, mp.get_context("spawn"), _worker_init, (threads,)) as pool:
            for phase in (first, then):
                futures = {pool.submit(_run_one, args): i for i, args in phase}
                for f in cf.as_completed(futures):
                    out[futures[f]] = f.result()
                    bar.update()
    bar.close()
    return [out[seen[key(c)]] for c in cfgs]
