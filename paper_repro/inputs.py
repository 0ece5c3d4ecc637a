"""From a config to the FL loop's inputs: the public/client/test split, the client partition, the synthetic set
(drawn by the FM, cached), the attack (through its registry) and what it poisoned; all randomness from
``cfg.seed``."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from . import attacks, defenses
from .codehash import library_versions, run_code_digest
from .config import Config
from .data import ImageSet, _fashion_dirs
from .fl import FLInputs
from .fm.synthetic import synthetic_key_hash, synthetic_set
from .options import RunOptions, options_for
from .partition import make_partition
from .rng import np_rng
from .splits import load_run_dataset, run_splits
from .triggers import asr_set, backdoor_labels

RESULTS_VERSION = 2
"""Bumped when a change of the code changes results or the form of run keys; part of every run key (2: keys from the
config and the keys of the inputs, :func:`run_hashes`)."""


@dataclass(frozen=True)
class Prepared:
    """Inputs of one run plus what must be saved with it (indices, hashes)."""

    inputs: FLInputs
    partition: list[np.ndarray]
    fm_poisoned: np.ndarray
    """Indices of the synthetic set the FM attack poisoned."""
    malicious: np.ndarray
    """Ids of the malicious clients."""
    synthetic_clean: ImageSet
    hashes: dict
    """What makes the run besides its config (:func:`run_hashes`): with the config, the run's key."""
    digests: dict
    """Content digests of what was prepared (public split, client pool, test set, synthetic set), for the record."""


def dataset_digest(name: str) -> str:
    """A digest of dataset ``name`` known before it is loaded (part of every run key): the SHA-256 of its files as
    found on disk (Fashion-MNIST's four ``.gz`` files), else of the loaded arrays (CIFAR-10, downloads, the generated
    smoke set). Reading the files is a fraction of decoding them. (It lives here, not in ``data``, so that the
    FM sampler's code digest, which covers ``data``, and with it the shipped synthetic sets' keys stay as they are.)"""
    if name == "fashion_mnist":
        for d in _fashion_dirs(None):
            files = sorted(d.glob("*-ubyte.gz"))
            if len(files) == 4:
                return hashlib.sha256(b"".join(hashlib.sha256(f.read_bytes()).digest() for f in files)).hexdigest()
    return _loaded_digest(name)


@functools.lru_cache(maxsize=None)
def _loaded_digest(name: str) -> str:
    train, test = load_run_dataset(name)
    return hashlib.sha256((train.digest() + test.digest()).encode()).hexdigest()


def run_hashes(cfg: Config) -> dict:
    """Everything besides the config that makes a run, known before any data is loaded or drawn: the dataset's
    files, the synthetic set's key (FM checkpoint, sampler settings and code), the defense's resolved parameters,
    the computing code and the libraries' versions. With the config, the run's key: a cached run is served without
    preparing anything."""
    attack, defense = attacks.REGISTRY.lookup(cfg.attack.kind), defenses.REGISTRY.lookup(cfg.defense.name)
    return {
        "data": dataset_digest(cfg.data.dataset),
        "synthetic": synthetic_key_hash(cfg),
        "results_version": RESULTS_VERSION,
        "defense": defenses.resolved_params(cfg.defense.name, cfg.defense.params),
        "code": run_code_digest(attack, defense),
        "libraries": library_versions(),
    }


def changed_images(clean: ImageSet, used: ImageSet) -> np.ndarray | None:
    """(N,) bool: the images of ``used`` that differ from ``clean`` in pixels or label (what the attack poisoned);
    None when the attack changed the set's size (then no image-to-image record exists)."""
    if used is clean:
        return np.zeros(len(clean), dtype=bool)
    if len(used) != len(clean) or used.x.shape != clean.x.shape:
        return None
    return (used.x != clean.x).reshape(len(clean), -1).any(1) | (used.y != clean.y)


def prepare(
    cfg: Config,
    progress: bool = True,
    opts: RunOptions | None = None,
    refresh: bool = False,
    attack: attacks.Attack | None = None,
) -> Prepared:
    """Data, public split, partition, synthetic set, attack and its poison: all from ``cfg.seed``. ``refresh``
    redraws the synthetic set instead of reading its cache; ``attack``: the config's attack if already built (fresh:
    it keeps state over a run)."""
    opts = options_for(cfg.profile, opts)
    d, a = cfg.data, cfg.attack
    splits = run_splits(cfg)
    parts = make_partition(
        splits.clients.y,
        cfg.fl.num_clients,
        d.partition,
        np_rng(cfg.seed, "partition"),
        beta=d.beta,
        min_size=d.min_size,
        shards_per_client=d.shards_per_client,
    )
    clean, syn_digest = synthetic_set(cfg, splits.public, progress, opts.device, opts.compile, refresh)
    attack = attack if attack is not None else attacks.build(cfg)
    syn_init, syn_kd, fm_idx = attack.poison_synthetic(clean)
    asr_test = asr_set(splits.test, attack.asr_trigger(cfg), a.target_class, a.mapping)
    targets = (
        a.target_class
        if a.mapping == "all_to_one"
        else backdoor_labels(asr_test.y, a.target_class, a.mapping, asr_test.num_classes)
    )
    inputs = FLInputs(
        [splits.clients.subset(p) for p in parts],
        syn_init,
        syn_kd,
        splits.test,
        asr_test,
        attack,
        targets,
        changed_images(clean, syn_init),
        changed_images(clean, syn_kd),
    )
    digests = {
        "public": splits.public.digest(),
        "clients": splits.clients.digest(),
        "test": splits.test.digest(),
        "synthetic": syn_digest,
    }
    return Prepared(
        inputs, parts, fm_idx, np.array(sorted(attack.malicious), dtype=np.int64), clean, run_hashes(cfg), digests
    )
