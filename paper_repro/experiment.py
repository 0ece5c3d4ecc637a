"""From a config to results: build the inputs (data, partition, synthetic set, poison, attackers), run the FL
loop, save a run folder keyed by the config hash, and reuse it on a rerun."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import defenses
from .attacks import DataPoisoning, NoAttack
from .config import Config, ConfigError, DefenseConfig, image_shape
from .data import REPO_ROOT, ImageSet, Splits, load_dataset, split_public
from .fl import FLInputs, Trajectory, run_federated
from .partition import make_partition
from .rng import np_rng, torch_gen
from .triggers import Trigger, asr_set, poison

RESULTS_VERSION = 1
TRAJECTORY = "trajectory.pt"


def default_results_dir() -> Path:
    return Path(os.environ.get("PAPER_REPRO_RESULTS", REPO_ROOT / "data" / "results"))


def cache_dir() -> Path:
    return Path(os.environ.get("PAPER_REPRO_CACHE", REPO_ROOT / "data" / "cache"))


def resolve_path(p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p


@dataclass(frozen=True)
class Prepared:
    """Inputs of one run plus what must be saved with it (indices, hashes)."""

    inputs: FLInputs
    partition: list[np.ndarray]
    fm_poisoned: np.ndarray
    malicious: np.ndarray
    synthetic_clean: ImageSet
    hashes: dict


# ------------------------------------------------------------------------------------------------ synthetic set
def checkpoint_digest(folder: Path) -> str:
    """Hash of every file of an FM checkpoint folder (names and bytes): the FM's part of a cache key, computed
    without loading the model."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def check_public_split(path: Path, public: ImageSet) -> None:
    """Refuse a DDPM checkpoint trained on another public split: its samples could leak client data."""
    from .fm import FMCheckpointError
    from .fm.ddpm import CONFIG_FILE, ClassConditionalDDPM

    if not (path / CONFIG_FILE).exists():
        ClassConditionalDDPM.load(path)  # raises the missing-checkpoint error with its fix
    trained_on = json.loads((path / CONFIG_FILE).read_text()).get("info", {}).get("train_data_digest")
    if trained_on and trained_on != public.digest():
        raise FMCheckpointError(
            f"The FM at {path} was trained on a different public split (digest {trained_on}, this config's is "
            f"{public.digest()}): its samples could leak client data. Keep data.public_size/split_seed as when "
            "it was trained, or train a new FM with `python -m paper_repro.fm train`.")


def load_fm(cfg: Config, public: ImageSet | None = None):
    """The configured foundation model (a DDPM must have been trained on this config's public split)."""
    from .fm import ClassConditionalDDPM, StableDiffusionFM

    path = resolve_path(cfg.fm.checkpoint)
    if cfg.fm.source == "ddpm":
        if public is not None:
            check_public_split(path, public)
        fm = ClassConditionalDDPM.load(path)
        fm.unet.to(cfg.device)  # sample where the run trains (the noise is drawn on the CPU either way)
        return fm
    if cfg.fm.source == "stable_diffusion":
        c, h, _ = image_shape(cfg.data.dataset)
        classes = public.classes if public is not None else load_dataset(cfg.data.dataset)[1].classes
        return StableDiffusionFM.load(path, classes, cfg.fm.prompt_template, resolution=h, channels=c)
    raise ConfigError(f"fm.source={cfg.fm.source!r} has no model to load")


def draw_synthetic(fm, cfg: Config, progress: bool = True) -> ImageSet:
    """``cfg.fm.n_per_class`` images per class from ``fm`` with the config's sampler settings and sample seed (no
    cache: :func:`synthetic_set` caches the draw of the configured checkpoint)."""
    f = cfg.fm
    kw = {"eta": f.eta, "precision": f.precision, "compile": f.compile} if f.source == "ddpm" else {}
    return fm.generate(f.n_per_class, generator=torch_gen(f.sample_seed, "fm_sample"),
                       num_inference_steps=f.num_inference_steps, guidance_scale=f.guidance_scale,
                       batch_size=f.batch_size, progress=progress, **kw)


def synthetic_set(cfg: Config, public: ImageSet, progress: bool = True) -> tuple[ImageSet, str]:
    """The clean class-balanced synthetic set and its digest, cached on disk by a hash of what produced it."""
    f = cfg.fm
    if f.source == "real_public":  # ablation/smoke: the first n_per_class public images of every class
        idx = np.concatenate([np.flatnonzero(public.y == c)[:f.n_per_class] for c in range(public.num_classes)])
        s = public.subset(np.sort(idx))
        return s, s.digest()
    path = resolve_path(f.checkpoint)
    if f.source == "ddpm":
        check_public_split(path, public)
    elif not path.is_dir():
        load_fm(cfg, public)  # raises the missing-checkpoint error with its fix
    key_src = {"source": f.source, "fm": checkpoint_digest(path), "n": f.n_per_class,
               "steps": f.num_inference_steps, "guidance": f.guidance_scale, "eta": f.eta, "seed": f.sample_seed,
               "prompt": f.prompt_template, **({"precision": f.precision} if f.precision != "fp32" else {})}
    key = Config().hash(key_src)
    cache = cache_dir() / "synthetic" / f"{f.source}_{key}.npz"
    if cache.exists():
        z = np.load(cache)
        s = ImageSet(z["x"], z["y"], tuple(z["classes"]))
        return s, s.digest()
    s = draw_synthetic(load_fm(cfg, public), cfg, progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x=s.x, y=s.y, classes=np.array(s.classes), key=json.dumps(key_src))
    os.replace(tmp, cache)
    return s, s.digest()


# ------------------------------------------------------------------------------------------------ prepare
def public_splits(cfg: Config) -> Splits:
    """The config's dataset split into the server's public split, the client pool and the test set (split seed
    ``cfg.data.split_seed``, independent of the run seed)."""
    d = cfg.data
    train, test = load_dataset(d.dataset)
    return split_public(train, test, d.public_size, d.client_size, d.test_size, seed=d.split_seed)


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    """Data, public split, partition, synthetic set, FM poisoning, malicious clients: all from ``cfg.seed``."""
    d, a = cfg.data, cfg.attack
    splits = public_splits(cfg)
    parts = make_partition(splits.clients.y, cfg.fl.num_clients, d.partition, np_rng(cfg.seed, "partition"),
                           beta=d.beta, min_size=d.min_size, shards_per_client=d.shards_per_client)
    clean, syn_digest = synthetic_set(cfg, splits.public, progress)
    trigger = Trigger(a.trigger, a.trigger_size, a.blend_alpha, seed=0)
    fm_idx = np.zeros(0, np.int64)
    syn_init = syn_kd = clean
    if a.uses_fm:
        poisoned, fm_idx = poison(clean, trigger, a.target_class, a.poison_ratio, np_rng(cfg.seed, "fm_poison"))
        syn_init = poisoned if "init" in a.fm_stages else clean
        syn_kd = poisoned if "kd" in a.fm_stages else clean
    malicious = np.zeros(0, np.int64)
    attack = NoAttack()
    if a.uses_classic:
        malicious = np.sort(np_rng(cfg.seed, "malicious").choice(cfg.fl.num_clients, a.num_malicious, replace=False))
        attack = DataPoisoning(malicious, trigger, a.target_class, a.client_poison_ratio, a.boost, seed=cfg.seed)
    inputs = FLInputs([splits.clients.subset(p) for p in parts], syn_init, syn_kd, splits.test,
                      asr_set(splits.test, trigger, a.target_class), attack, a.target_class)
    hashes = {"public": splits.public.digest(), "clients": splits.clients.digest(), "test": splits.test.digest(),
              "synthetic": syn_digest, "results_version": RESULTS_VERSION,
              "defense": defenses.resolved_params(cfg.defense.name, cfg.defense.params)}
    return Prepared(inputs, parts, fm_idx, malicious, clean, hashes)


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class RunResult:
    """``history``: one row per round (round 0 = after initialisation); ``final``: last row as a dict."""

    history: pd.DataFrame
    run_dir: Path
    cached: bool = False

    @property
    def final(self) -> dict:
        return self.history.iloc[-1].to_dict()

    @property
    def config(self) -> dict:
        return json.loads((self.run_dir / "config.json").read_text())["config"]


def run_name(cfg: Config, key: str) -> str:
    return f"{cfg.profile}_{cfg.attack.kind}_{cfg.defense.name}_{cfg.data.partition}_s{cfg.seed}_{key}"


def run_experiment(cfg: Config, results_dir: str | Path | None = None, progress: bool = True,
                   force: bool = False, record_trajectory: bool = False) -> RunResult:
    """Run one experiment, or load it if a finished run with the same config hash exists (``force`` re-runs it
    into a fresh folder and only then replaces the old one). ``record_trajectory`` also saves the run's
    :class:`~paper_repro.fl.Trajectory` (re-running a cached run that lacks one)."""
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    prep = prepare(cfg, progress)
    key = cfg.hash(prep.hashes)
    run_dir = results_dir / run_name(cfg, key)
    have_trajectory = not record_trajectory or (run_dir / TRAJECTORY).exists()
    if (run_dir / "metrics.csv").exists() and have_trajectory and not force:
        return RunResult(pd.read_csv(run_dir / "metrics.csv"), run_dir, cached=True)
    defense = defenses.get(cfg.defense.name, **cfg.defense.params)
    replay = training_trajectory(cfg, results_dir, progress) if _replays(cfg, defense) else None
    t0 = time.perf_counter()
    out = run_federated(cfg, prep.inputs, defense, progress, init_cache=cache_dir() / "init", replay=replay,
                        record=record_trajectory)
    history = pd.DataFrame(out.history)
    history.insert(0, "seed", cfg.seed)
    history.insert(0, "defense", cfg.defense.name)
    history.insert(0, "attack", cfg.attack.kind)
    history["total_seconds"] = time.perf_counter() - t0
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=results_dir))
    meta = {"config": cfg.to_dict(), "config_hash": key, "hashes": prep.hashes,
            "provenance": "reconstruction of arXiv 2410.17573 (see PAPER.md); not the paper's numbers",
            "torch": torch.__version__, "python": platform.python_version()}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=list))
    np.savez_compressed(tmp / "indices.npz", fm_poisoned=prep.fm_poisoned, malicious=prep.malicious,
                        **{f"partition_{k}": p for k, p in enumerate(prep.partition)},
                        **{f"client_poisoned_{k}": v for k, v in prep.inputs.attack.poisoned_indices().items()})
    (tmp / "flagged.json").write_text(json.dumps(out.flagged))
    history.to_csv(tmp / "metrics.csv", index=False)
    if out.trajectory is not None:
        out.trajectory.save(tmp / TRAJECTORY)
    if run_dir.exists():  # only reached with force=True: swap in the new run, then drop the old one
        old = run_dir.with_name(run_dir.name + ".old")
        os.replace(run_dir, old)
        os.replace(tmp, run_dir)
        shutil.rmtree(old)
    else:
        try:
            os.replace(tmp, run_dir)
        except OSError:  # another process finished the same run first: keep its folder
            if not (run_dir / "metrics.csv").exists():
                raise
            shutil.rmtree(tmp)
    return RunResult(history, run_dir)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of handing them back to the OS.

    Training and bound fitting allocate and free the same activation-sized buffers thousands of times; by default
    glibc returns them, and every reuse page-faults fresh zeroed pages (mmac's fit spent 13 % of its time in the
    kernel: 32 M page faults in one quick run). Called by the command line and by :func:`run_many`'s workers,
    never on import; a process-wide allocator setting, harmless elsewhere. Returns False where there is no glibc."""
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
    cfg, results_dir, record = args
    return run_experiment(cfg, results_dir, progress=False, record_trajectory=record)


def run_many(cfgs: list[Config], results_dir: str | Path | None = None, jobs: int = 1, progress: bool = True,
             desc: str = "runs") -> list[RunResult]:
    """:func:`run_experiment` for every config (cached ones are loaded), ``jobs`` at a time in worker processes with
    an equal share of torch's threads each; results in the order of ``cfgs``.

    On a CPU, small convolutions do not keep several threads busy, so two one-thread runs side by side finish
    sooner than two two-thread runs in turn (benchmarks/speed.py, part ``jobs``); the numbers agree up to float
    rounding (one thread sums in another order than two), so ``jobs=1`` is what reproduces the committed tables
    bit for bit. Runs whose defense replays a no-defense run (``fl.share_training``) start after that run."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()

    def key(c: Config) -> str:
        return json.dumps(c.to_dict(), sort_keys=True, default=list)

    bases = [replace(c, defense=DefenseConfig()) for c in cfgs if _replays(c)]
    need = {key(b) for b in bases}
    first, then = [], []  # (position, args); a run that another one replays records its trajectory
    seen: dict[str, int] = {}
    for i, c in enumerate([*cfgs, *bases]):  # bases missing from cfgs run too, before their replays
        k = key(c)
        if k in seen:
            continue
        seen[k] = i
        (then if _replays(c) else first).append((i, (c, results_dir, k in need)))
    out: dict[int, RunResult] = {}
    bar = tqdm(total=len(first) + len(then), desc=desc, disable=not progress)
    if jobs == 1:
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


def _replays(cfg: Config, defense: defenses.Defense | None = None) -> bool:
    """Whether ``cfg``'s run replays its no-defense run (``defense``: its instance, if already built)."""
    if not cfg.fl.share_training or cfg.defense.name == "none":
        return False
    return (defense or defenses.get(cfg.defense.name, **cfg.defense.params)).trains_like_none


def training_trajectory(cfg: Config, results_dir: str | Path | None = None, progress: bool = True) -> Trajectory:
    """The per-round weights of ``cfg`` without a defense (run, or loaded from that run's folder), which every
    defense with ``trains_like_none`` shares."""
    base = replace(cfg, defense=DefenseConfig())
    res = run_experiment(base, results_dir, progress, record_trajectory=True)
    return Trajectory.load(res.run_dir / TRAJECTORY)


def load_results(results_dir: str | Path | None = None, profile: str | None = None) -> pd.DataFrame:
    """All finished runs under ``results_dir`` as one tidy DataFrame (config columns flattened)."""
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    frames = []
    for m in sorted(results_dir.glob("*/metrics.csv")):
        meta = json.loads((m.parent / "config.json").read_text())
        c = meta["config"]
        if profile and c["profile"] != profile:
            continue
        df = pd.read_csv(m)
        df["profile"], df["partition"], df["beta"] = c["profile"], c["data"]["partition"], c["data"]["beta"]
        df["poison_ratio"], df["run"] = c["attack"]["poison_ratio"], m.parent.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
