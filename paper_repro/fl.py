"""The FM-integrated FL loop, :func:`run_federated`, read top to bottom as the paper's pipeline: (0) initialise
the global model on the synthetic set, then per round (1) sample clients, (2) local training, (3) aggregation through
the defense, (4) FedDF fusion on the synthetic set, (5) post-fusion defense, (6) evaluation."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .attacks import Attack
from .config import Config
from .data import ImageSet
from .defenses import Defense, RoundContext
from .local_training import train_clients
from .metrics import class_shares, detection_rates, evaluate, no_metrics
from .models import build_model, flat_state, load_flat_state
from .options import RunOptions
from .progress import tqdm
from .rng import derive_seed, np_rng, torch_gen
from .training import distill, ensemble_logits, train_supervised


@dataclass
class FLInputs:
    """Everything the loop needs, built by :func:`paper_repro.inputs.prepare` from a config."""

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
    attack: Attack
    target_class: int | np.ndarray
    """The backdoor's label: one class (all-to-one) or one per image of ``asr_test`` (all-to-all)."""


@dataclass
class FLOutput:
    """What :func:`run_federated` returns: one history row per round (round 0 = after initialisation), the model
    served after the last round (bounded, for a post-fusion defense), and each round's flagged client ids."""

    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    flagged: list[list[int]] = field(default_factory=list)


OK, DIVERGED = "ok", "diverged"
"""Per-round ``status``: a run whose weights become non-finite ends with a ``diverged`` row (ACC/ASR NaN)."""

OnFused = Callable[[int, nn.Module, np.ndarray, dict], None]
"""Called after step 4 of every round with (round, fused model, sampled client ids, the round's row so far)."""


def init_global_model(cfg: Config, inp: FLInputs, device: str = "cpu") -> nn.Module:
    """Step 0: a fresh model trained supervised on the synthetic init set. [C: 2401.10375]"""
    fl = cfg.fl
    model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes,
                        derive_seed(cfg.seed, "model_init")).to(device)
    xi, yi = inp.synthetic_init.tensors(device)
    return train_supervised(model, xi, yi, fl.init_epochs, fl.init_lr, fl.momentum, fl.batch_size,
                            torch_gen(cfg.seed, "init"), cfg.model.channels_last, fl.precision)


def evaluate_served(model: nn.Module, cfg: Config, inp: FLInputs, opts: RunOptions) -> dict[str, float]:
    """Step 6: ACC/ASR of ``model`` as the run evaluates (device, batch, memory format)."""
    return evaluate(model, inp.test, inp.asr_test, inp.target_class, opts.device, opts.eval_batch_size,
                    cfg.model.channels_last, class_shares([c.y for c in inp.clients], inp.test.num_classes),
                    cfg.fl.precision)


def round_context(cfg: Config, opts: RunOptions, inp: FLInputs, model: nn.Module, rnd: int) -> RoundContext:
    """What the defense may see in round ``rnd`` (its generator is derived from the seed and the round)."""
    return RoundContext(rnd, np.zeros(0, np.int64), model, inp.synthetic_kd, torch_gen(cfg.seed, "defense", rnd),
                        opts.device, cfg.fl.num_rounds, opts.eval_batch_size, cfg.model.channels_last)


def defend_and_evaluate(defense: Defense, model: nn.Module, ctx: RoundContext, cfg: Config, inp: FLInputs,
                        opts: RunOptions, row: dict) -> nn.Module:
    """Steps 5–6 of a round: the post-fusion defense acts on a view of the fused model (the weights stay as fused),
    and the served model is evaluated; their seconds and ACC/ASR go into ``row``. Returns the served model."""
    t = time.perf_counter()
    ctx.global_model = model
    served = defense.after_fusion(model, ctx)
    row["defense_seconds"] = time.perf_counter() - t + row["aggregate_seconds"]
    t = time.perf_counter()
    row.update(evaluate_served(served, cfg, inp, opts))
    row["eval_seconds"] = time.perf_counter() - t
    return served


def client_sizes(inp: FLInputs) -> torch.Tensor:
    """(K,) local data sizes, the sample weights of FedAvg."""
    return torch.tensor([len(c) for c in inp.clients], dtype=torch.float32)


def sample_clients(cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """Step 1: this round's client ids, sorted (``clients_per_round`` of ``num_clients`` without replacement)."""
    return np.sort(rng.choice(cfg.fl.num_clients, size=cfg.fl.clients_per_round, replace=False))


def server_steps(cfg: Config, opts: RunOptions, inp: FLInputs, defense: Defense, model: nn.Module,
                 ctx: RoundContext, thetas: torch.Tensor, updates: torch.Tensor, g: torch.Tensor,
                 sizes: torch.Tensor, kd: tuple[torch.Tensor, torch.Tensor], row: dict,
                 on_fused: OnFused | None = None) -> tuple[nn.Module | None, list[int]]:
    """Steps 3–6 of round ``ctx.round`` on the server, given the sampled clients' local models ``thetas`` (K, P) and the
    updates they sent ``updates`` (K, P; a malicious client's may be crafted), the global state ``g`` they started
    from, the clients' data sizes ``sizes`` (indexed by ``ctx.client_ids``) and the fusion set ``kd``
    (``inp.synthetic_kd.tensors(device)``, converted once per run): aggregation through the defense, FedDF fusion,
    the post-fusion defense and evaluation. ``model`` (the global model) is updated in place; the round's numbers go
    into ``row``. Returns (the served model, the flagged ids), or (None, flagged) when the weights diverged (``row``
    then says so). Shared by :func:`run_federated` and the Flower strategy (:mod:`paper_repro.flower`)."""
    fl, cl, ids = cfg.fl, cfg.model.channels_last, ctx.client_ids
    # 3. aggregation through the defense (robust aggregators and detectors act here)
    t = time.perf_counter()
    weights = sizes[ids] if fl.weighting == "samples" else torch.ones(len(ids))
    agg = defense.aggregate(updates, weights, ctx)
    load_flat_state(model, g + agg.update)
    flagged = sorted(int(f) for f in (agg.flagged or []))
    row["aggregate_seconds"] = time.perf_counter() - t
    row.update(detection_rates(flagged, ids, inp.attack.malicious))
    row.update({f"defense_{k}": float(v) for k, v in (agg.info or {}).items()})
    # 4. FedDF fusion: distil toward the mean logits of the admitted clients' (un-scaled) local models
    t = time.perf_counter()
    if fl.fusion and fl.kd_epochs > 0:
        x_kd, y_kd = kd
        admitted = [i for i, k in enumerate(ids) if int(k) not in flagged] or list(range(len(ids)))
        teacher = ensemble_logits(model, thetas[admitted], x_kd, opts.eval_batch_size, cl,
                                  fl.precision)  # (N_syn, C)
        distill(model, x_kd, y_kd, teacher, fl.kd_epochs, fl.kd_lr, fl.momentum, fl.batch_size, fl.kd_alpha,
                fl.kd_temperature, torch_gen(cfg.seed, "kd", ctx.round), cl, fl.precision)
    row["fusion_seconds"] = time.perf_counter() - t
    if not torch.isfinite(flat_state(model)).all():
        row.update({"status": DIVERGED, **no_metrics()})
        return None, flagged
    if on_fused is not None:
        on_fused(ctx.round, model, ids, row)
    # 5.–6. post-fusion defense on a view of the fused model, then ACC/ASR of the model the server serves
    return defend_and_evaluate(defense, model, ctx, cfg, inp, opts, row), flagged


def run_federated(cfg: Config, inp: FLInputs, defense: Defense, opts: RunOptions | None = None,
                  progress: bool = True, initial_model: nn.Module | None = None,
                  on_fused: OnFused | None = None) -> FLOutput:
    """Run ``cfg.fl.num_rounds`` rounds of FM-integrated FL with ``defense``.

    ``initial_model``: the step-0 model if it was already trained (e.g. loaded from a cache; it is trained further
    in place), else it is trained here. ``on_fused``: a hook after step 4 (e.g. to record the weights)."""
    opts = opts or RunOptions.for_profile(cfg.profile)
    fl, dev, cl, seed = cfg.fl, opts.device, cfg.model.channels_last, cfg.seed
    out = FLOutput()
    # 0. initialise the global model by supervised training on the (possibly poisoned) synthetic set
    t = time.perf_counter()
    model = initial_model if initial_model is not None else init_global_model(cfg, inp, dev)
    out.history.append({"round": 0, **evaluate_served(model, cfg, inp, opts), "init_seconds": time.perf_counter() - t,
                        "status": OK})
    out.model = model
    clients = [inp.attack.local_data(k, d).tensors(dev) for k, d in enumerate(inp.clients)]  # malicious: poisoned
    sizes = client_sizes(inp)
    kd = inp.synthetic_kd.tensors(dev)
    sample_rng = np_rng(seed, "client_sampling")

    for rnd in tqdm(range(1, fl.num_rounds + 1), desc="FL rounds", disable=not progress):
        t_round, row = time.perf_counter(), {"round": rnd, "status": OK}
        ctx = round_context(cfg, opts, inp, model, rnd)
        # 1. sample clients without replacement
        ids = sample_clients(cfg, sample_rng)
        ctx.client_ids = ids
        # 2. local training from the global model; malicious clients train on poisoned data and craft their update
        t = time.perf_counter()
        g = flat_state(model)
        inp.attack.begin_round(rnd, g)
        gens = [torch_gen(seed, "client", int(k), "round", rnd) for k in ids]
        thetas = train_clients(opts.engine, dev, model, [clients[k] for k in ids], fl.local_epochs, fl.lr,
                               fl.momentum, fl.batch_size, gens, cl, context=defense.client_context(),
                               precision=fl.precision)  # (K, P): each client's local model
        updates = torch.stack([inp.attack.craft_update(int(k), theta - g) for k, theta in zip(ids, thetas)])
        row["local_seconds"] = time.perf_counter() - t
        # 3. the defense aggregates the updates (robust aggregators and detectors act here)
        # 4. FedDF fusion on the server's synthetic set
        # 5.–6. the post-fusion defense, then ACC/ASR of the served model (the server's side: server_steps, shared
        #       with the Flower strategy)
        served, flagged = server_steps(cfg, opts, inp, defense, model, ctx, thetas, updates, g, sizes, kd, row,
                                       on_fused)
        if served is None:  # diverged: the run ends here and reports no ACC/ASR
            out.history.append(row)
            break
        out.model = served
        row["round_seconds"] = time.perf_counter() - t_round
        out.history.append(row)
        out.flagged.append(flagged)
    return out
