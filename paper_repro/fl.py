"""The FM-integrated FL loop (DESIGN §1): synthetic initialisation, then per round (1) sample clients, (2) local
training, (3) aggregation through the defense, (4) FedDF fusion on the synthetic set, (5) post-fusion defense,
(6) ACC/ASR of the global model."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks import ClientAttack
from .config import Config
from .data import ImageSet
from .defenses import Defense, RoundContext
from .engine import train_clients
from .models import build_model
from .rng import derive_seed, np_rng, torch_gen
from .train import accuracy, distill, flat_state, load_flat_state, predict_logits, train_supervised


@dataclass
class FLInputs:
    """Everything the loop needs, built by ``experiment.prepare`` from a config."""

    clients: list[ImageSet]
    """Client k's (clean) local data."""
    synthetic_init: ImageSet
    """Synthetic set used to initialise the global model (poisoned if the FM attack targets init)."""
    synthetic_kd: ImageSet
    """Synthetic set used for fusion and by post-fusion defenses (poisoned if the FM attack targets kd)."""
    test: ImageSet
    """Clean test set (ACC)."""
    asr_test: ImageSet
    """Triggered non-target test images with their true labels (ASR = fraction predicted as target)."""
    attack: ClientAttack
    target_class: int


@dataclass
class FLOutput:
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    flagged: list[list[int]] = field(default_factory=list)
    trajectory: Trajectory | None = None


def evaluate(model: nn.Module, inp: FLInputs, cfg: Config) -> dict[str, float]:
    """ACC on the clean test set; ASR on triggered non-target images (target excluded, PAPER.md §6)."""
    dev, bs, cl = cfg.device, cfg.fl.eval_batch_size, cfg.model.channels_last
    x, y = inp.test.tensors(dev)
    xa, _ = inp.asr_test.tensors(dev)
    acc = accuracy(model, x, y, bs, cl)
    pred = predict_logits(model, xa, bs, cl).argmax(1)
    asr = (pred == inp.target_class).float().mean().item() if len(pred) else float("nan")
    return {"acc": acc, "asr": asr}


def detection_rates(flagged: list[int], ids: np.ndarray, malicious: frozenset) -> dict[str, float]:
    """TPR = flagged malicious / sampled malicious, FPR = flagged benign / sampled benign (NaN when undefined)."""
    mal = [int(k) for k in ids if int(k) in malicious]
    ben = [int(k) for k in ids if int(k) not in malicious]
    f = set(flagged)
    return {"num_flagged": len(flagged),
            "tpr": sum(k in f for k in mal) / len(mal) if mal else float("nan"),
            "fpr": sum(k in f for k in ben) / len(ben) if ben else float("nan")}


def initial_model(cfg: Config, inp: FLInputs, cache: Path | None = None) -> tuple[nn.Module, bool]:
    """Step 0: the global model trained on the synthetic init set, and whether it came from ``cache``.

    Every run of a grid that shares the seed and the synthetic init set (all defenses, both partitions, the
    classic attack beside no attack) starts from the same model, so with a ``cache`` folder it is trained once and
    loaded afterwards, keyed by a hash of everything that produced it."""
    fl, dev, cl = cfg.fl, cfg.device, cfg.model.channels_last
    init_seed = derive_seed(cfg.seed, "model_init")
    model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes, init_seed).to(dev)
    src = {"model": cfg.model.name, "shape": list(inp.test.shape), "classes": inp.test.num_classes,
           "init_seed": init_seed, "order_seed": cfg.seed, "synthetic": inp.synthetic_init.digest(),
           "epochs": fl.init_epochs, "lr": fl.init_lr, "momentum": fl.momentum, "batch_size": fl.batch_size}
    path = None
    if cache is not None:
        key = hashlib.sha256(json.dumps(src, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache) / f"{cfg.model.name}_{key}.pt"
        if path.exists():
            model.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
            return model, True
    xi, yi = inp.synthetic_init.tensors(dev)
    train_supervised(model, xi, yi, fl.init_epochs, fl.init_lr, fl.momentum, fl.batch_size,
                     torch_gen(cfg.seed, "init"), cl)
    if path is not None:
        _save_atomic(model.state_dict(), path)
    return model, False


def _save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then renamed: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class Trajectory:
    """The global model after initialisation and after every fusion, with each round's sampled clients and the
    timings of steps 1–4: what a run shares with every run whose defense acts only at step 5 on a view of the fused
    model (:attr:`Defense.trains_like_none`), since such a defense leaves the weights, and so every later round, as
    without it. Recorded by a no-defense run, replayed by :func:`run_federated`."""

    states: torch.Tensor
    """(R + 1, P): flat state after initialisation (row 0) and after the fusion of round r (row r)."""
    client_ids: list[np.ndarray]
    rows: list[dict]
    """Per round: the step 1–4 columns of its history row (seconds, detection rates)."""

    def save(self, path: Path) -> None:
        _save_atomic({"states": self.states, "client_ids": [a.tolist() for a in self.client_ids],
                      "rows": self.rows}, path)

    @classmethod
    def load(cls, path: Path) -> Trajectory:
        d = torch.load(path, weights_only=True)
        return cls(d["states"], [np.asarray(a, dtype=np.int64) for a in d["client_ids"]], d["rows"])

    def model_at(self, cfg: Config, inp: FLInputs, rnd: int = -1) -> nn.Module:
        """A fresh model of ``cfg`` holding the weights after round ``rnd`` (0 = initialisation, -1 = the last)."""
        model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes, 0).to(cfg.device)
        return load_flat_state(model, self.states[rnd].to(cfg.device))


TRAINING_COLUMNS = ("local_seconds", "aggregate_seconds", "fusion_seconds", "num_flagged", "tpr", "fpr")


def run_federated(cfg: Config, inp: FLInputs, defense: Defense, progress: bool = True,
                  init_cache: Path | None = None, replay: Trajectory | None = None, record: bool = False) -> FLOutput:
    """Run ``cfg.fl.num_rounds`` rounds; one history row per round (round 0 = after synthetic initialisation).
    ``init_cache``: folder where the initial model is cached (:func:`initial_model`). ``record``: keep the
    :class:`Trajectory` in ``out.trajectory``. ``replay``: take steps 0–4 of every round from a recorded trajectory
    instead of computing them (only for a defense with ``trains_like_none``; the results are the same)."""
    fl, dev, cl, seed = cfg.fl, cfg.device, cfg.model.channels_last, cfg.seed
    if replay is not None and not defense.trains_like_none:
        raise ValueError(f"defense {defense.name!r} changes training, so it cannot replay a no-defense trajectory")
    out = FLOutput()
    t0 = time.perf_counter()
    if replay is None:
        # 0. initialise the global model by supervised training on the synthetic set [C: 2401.10375]
        model, cached = initial_model(cfg, inp, init_cache)
    else:
        model, cached = replay.model_at(cfg, inp, 0), True
    out.history.append({"round": 0, **evaluate(model, inp, cfg), "init_seconds": time.perf_counter() - t0,
                        "init_cached": cached})
    out.model = model
    states, ids_seen, rows_seen = [flat_state(model)] if record else [], [], []
    train = None if replay is not None else _RoundTrainer(cfg, inp, defense)

    for rnd in tqdm(range(1, fl.num_rounds + 1), desc="FL rounds", disable=not progress):
        t_round = time.perf_counter()
        ctx = RoundContext(rnd, np.zeros(0, np.int64), model, inp.synthetic_kd, torch_gen(seed, "defense", rnd), dev,
                           fl.num_rounds, eval_batch_size=fl.eval_batch_size, channels_last=cl)
        if replay is None:  # steps 1-4
            ctx.client_ids, flagged, row = train(model, rnd, ctx)
        else:
            ctx.client_ids, flagged, row = replay.client_ids[rnd - 1], [], {"round": rnd, **replay.rows[rnd - 1]}
            load_flat_state(model, replay.states[rnd].to(dev))
        out.flagged.append(flagged)
        if record:
            states.append(flat_state(model))
            ids_seen.append(ctx.client_ids)
            rows_seen.append({k: row[k] for k in TRAINING_COLUMNS})
        # 5. post-fusion defense (acts on a view of the model; the distributed weights stay as fused)
        t = time.perf_counter()
        ctx.global_model = model
        served = defense.after_fusion(model, ctx)
        row["defense_seconds"] = time.perf_counter() - t + row["aggregate_seconds"]
        # 6. evaluation of the served global model
        t = time.perf_counter()
        row.update(evaluate(served, inp, cfg))
        row["eval_seconds"] = time.perf_counter() - t
        row["round_seconds"] = time.perf_counter() - t_round
        if replay is not None:  # the round as it would have taken: replayed steps 1-4 + this run's steps 5-6
            row["round_seconds"] += row["local_seconds"] + row["aggregate_seconds"] + row["fusion_seconds"]
            row["shared_training"] = True
        out.history.append(row)
        out.model = served
    if record:
        out.trajectory = Trajectory(torch.stack(states), ids_seen, rows_seen)
    return out


class _RoundTrainer:
    """Steps 1–4 of a round, in place on the global model: sample clients, local training, aggregation through the
    defense, FedDF fusion. Returns the sampled ids, the flagged ids and the round's history row so far."""

    def __init__(self, cfg: Config, inp: FLInputs, defense: Defense):
        self.cfg, self.inp, self.defense = cfg, inp, defense
        dev = cfg.device
        self.x_kd, self.y_kd = inp.synthetic_kd.tensors(dev)
        self.client_tensors = [c.tensors(dev) for c in (inp.attack.local_data(k, d) for k, d in enumerate(inp.clients))]
        self.sizes = torch.tensor([len(c) for c in inp.clients], dtype=torch.float32)
        self.sample_rng = np_rng(cfg.seed, "client_sampling")

    def __call__(self, model: nn.Module, rnd: int, ctx: RoundContext) -> tuple[np.ndarray, list[int], dict]:
        fl, dev, cl, seed, inp = self.cfg.fl, self.cfg.device, self.cfg.model.channels_last, self.cfg.seed, self.inp
        row: dict = {"round": rnd}
        # 1. sample clients without replacement
        ids = np.sort(self.sample_rng.choice(fl.num_clients, size=fl.clients_per_round, replace=False))
        ctx.client_ids = ids
        # 2. local training (malicious clients train on poisoned data and may scale their update)
        t = time.perf_counter()
        g = flat_state(model)
        client_ctx = self.defense.client_context()  # e.g. last round's activation bounds, if shipped to clients
        gens = [torch_gen(seed, "client", int(k), "round", rnd) for k in ids]
        thetas = list(train_clients(fl.engine, dev, model, [self.client_tensors[k] for k in ids], fl.local_epochs,
                                    fl.lr, fl.momentum, fl.batch_size, gens, cl, context=client_ctx,
                                    precision=fl.precision))
        teachers = thetas  # the KD teacher uses the un-scaled local model [C: FRJ-AJ]
        updates = torch.stack([inp.attack.craft_update(int(k), theta - g) for k, theta in zip(ids, thetas)])  # (K, P)
        row["local_seconds"] = time.perf_counter() - t
        # 3. aggregation through the defense (robust aggregators / detectors act here)
        t = time.perf_counter()
        w = self.sizes[ids] if fl.weighting == "samples" else torch.ones(len(ids))
        agg = self.defense.aggregate(updates, w, ctx)
        load_flat_state(model, g + agg.update)
        flagged = sorted(int(f) for f in (agg.flagged or []))
        row["aggregate_seconds"] = time.perf_counter() - t
        row.update(detection_rates(flagged, ids, inp.attack.malicious))
        # 4. server fusion: distil toward the mean logits of the admitted clients' local models [C: FedDF]
        t = time.perf_counter()
        if fl.fusion and fl.kd_epochs > 0:
            admitted = [i for i, k in enumerate(ids) if int(k) not in flagged] or list(range(len(ids)))
            tmp = copy.deepcopy(model)
            logits = torch.stack([predict_logits(load_flat_state(tmp, teachers[i]), self.x_kd, fl.eval_batch_size,
                                                 cl) for i in admitted]).mean(0)  # (N_syn, C)
            distill(model, self.x_kd, self.y_kd, logits, fl.kd_epochs, fl.kd_lr, fl.momentum, fl.batch_size,
                    fl.kd_alpha, fl.kd_temperature, torch_gen(seed, "kd", rnd), cl)
        row["fusion_seconds"] = time.perf_counter() - t
        return ids, flagged, row
