"""The FM-integrated FL loop (DESIGN §1): synthetic initialisation, then per round (1) sample clients, (2) local
training, (3) aggregation through the defense, (4) FedDF fusion on the synthetic set, (5) post-fusion defense,
(6) ACC/ASR of the global model."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

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


def run_federated(cfg: Config, inp: FLInputs, defense: Defense, progress: bool = True) -> FLOutput:
    """Run ``cfg.fl.num_rounds`` rounds; one history row per round (round 0 = after synthetic initialisation)."""
    fl, dev, cl, seed = cfg.fl, cfg.device, cfg.model.channels_last, cfg.seed
    out = FLOutput()
    x_kd, y_kd = inp.synthetic_kd.tensors(dev)
    client_tensors = [c.tensors(dev) for c in (inp.attack.local_data(k, d) for k, d in enumerate(inp.clients))]
    sizes = torch.tensor([len(c) for c in inp.clients], dtype=torch.float32)

    # 0. initialise the global model by supervised training on the synthetic set [C: 2401.10375]
    t0 = time.perf_counter()
    model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes, derive_seed(seed, "model_init")).to(dev)
    xi, yi = inp.synthetic_init.tensors(dev)
    train_supervised(model, xi, yi, fl.init_epochs, fl.init_lr, fl.momentum, fl.batch_size,
                     torch_gen(seed, "init"), cl)
    out.history.append({"round": 0, **evaluate(model, inp, cfg), "init_seconds": time.perf_counter() - t0})
    out.model = model
    sample_rng = np_rng(seed, "client_sampling")

    for rnd in tqdm(range(1, fl.num_rounds + 1), desc="FL rounds", disable=not progress):
        row: dict = {"round": rnd}
        t_round = time.perf_counter()
        # 1. sample clients without replacement
        ids = np.sort(sample_rng.choice(fl.num_clients, size=fl.clients_per_round, replace=False))
        # 2. local training (malicious clients train on poisoned data and may scale their update)
        t = time.perf_counter()
        g = flat_state(model)
        client_ctx = defense.client_context()  # e.g. last round's activation bounds, if shipped to clients
        gens = [torch_gen(seed, "client", int(k), "round", rnd) for k in ids]
        thetas = list(train_clients(fl.engine, dev, model, [client_tensors[k] for k in ids], fl.local_epochs, fl.lr,
                                    fl.momentum, fl.batch_size, gens, cl, context=client_ctx, precision=fl.precision))
        teachers = thetas  # the KD teacher uses the un-scaled local model [C: FRJ-AJ]
        updates = [inp.attack.craft_update(int(k), theta - g) for k, theta in zip(ids, thetas)]
        updates_t = torch.stack(updates)  # (K, P)
        row["local_seconds"] = time.perf_counter() - t
        # 3. aggregation through the defense (robust aggregators / detectors act here)
        t = time.perf_counter()
        ctx = RoundContext(rnd, ids, model, inp.synthetic_kd, torch_gen(seed, "defense", rnd), dev, fl.num_rounds)
        agg = defense.aggregate(updates_t, sizes[ids] if fl.weighting == "samples" else torch.ones(len(ids)), ctx)
        load_flat_state(model, g + agg.update)
        flagged = sorted(int(f) for f in (agg.flagged or []))
        out.flagged.append(flagged)
        row["aggregate_seconds"] = time.perf_counter() - t
        row.update(detection_rates(flagged, ids, inp.attack.malicious))
        # 4. server fusion: distil toward the mean logits of the admitted clients' local models [C: FedDF]
        t = time.perf_counter()
        if fl.fusion and fl.kd_epochs > 0:
            admitted = [i for i, k in enumerate(ids) if int(k) not in flagged] or list(range(len(ids)))
            tmp = copy.deepcopy(model)
            logits = torch.stack([predict_logits(load_flat_state(tmp, teachers[i]), x_kd, fl.eval_batch_size, cl)
                                  for i in admitted]).mean(0)  # (N_syn, C)
            distill(model, x_kd, y_kd, logits, fl.kd_epochs, fl.kd_lr, fl.momentum, fl.batch_size, fl.kd_alpha,
                    fl.kd_temperature, torch_gen(seed, "kd", rnd), cl)
        row["fusion_seconds"] = time.perf_counter() - t
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
        out.history.append(row)
        out.model = served
    return out
