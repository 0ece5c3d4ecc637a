"""The FM-integrated FL loop, :func:`run_federated`, read top to bottom as the paper's pipeline: (0) initialise
the global model on the synthetic set, then per round (1) sample clients, (2) local training, (3) aggregation through
the defense, (4) FedDF fusion on the synthetic set, (5) post-fusion defense, (6) evaluation.

Each step is a small function with explicit inputs and outputs; the loop calls them in order, and so does the Flower
strategy (:mod:`paper_repro.integrations.flower`). A defense that acts only at step 5 (``Defense.trains_like_none``)
can be evaluated *alongside* the run's own defense on the same training: one training, one output per defense."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .attacks import Attack
from .config import Config
from .data import ImageSet
from .defenses import Defense, FusionHooks, LocalTraining, RoundContext, ScreenContext
from .local_training import train_clients
from .metrics import class_shares, detection_rates, evaluate, no_metrics
from .models import build_model, flat_state, load_flat_state
from .options import RunOptions, options_for
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
    poisoned_init: np.ndarray | None = None
    poisoned_kd: np.ndarray | None = None
    """(N,) bool: which images of the init / fusion set the FM attack changed (None: not known). Never shown to a
    defense; used only to report what a screening defense removed."""


@dataclass
class FLOutput:
    """What :func:`run_federated` returns: one history row per round (round 0 = after initialisation), the model
    served after the last round (bounded, for a post-fusion defense), the final fused weights (what the next round
    would start from), each round's flagged client ids, and the outputs of the defenses run ``alongside``."""

    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    fused: nn.Module | None = None
    flagged: list[list[int]] = field(default_factory=list)
    alongside: dict[str, FLOutput] = field(default_factory=dict)


OK, DIVERGED = "ok", "diverged"
"""Per-round ``status``: a run whose weights become non-finite ends with a ``diverged`` row (ACC/ASR NaN)."""


class Timer:
    """Seconds per step, kept in one place: ``with timer("local"): ...`` adds to ``timer.seconds["local_seconds"]``;
    :meth:`take` hands them over and starts afresh."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, step: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            key = f"{step}_seconds"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


@dataclass(frozen=True)
class Aggregated:
    """Step 3's result: the global state after aggregation (P,), the flagged client ids and the row's columns
    (detection rates; what the defense measured, as ``defense_<key>``)."""

    state: torch.Tensor
    flagged: list[int]
    columns: dict


# ------------------------------------------------------------------------------------------------ the steps
def init_global_model(cfg: Config, inp: FLInputs, device: str = "cpu") -> nn.Module:
    """Step 0: a fresh model trained supervised on the synthetic init set. [C: 2401.10375]"""
    fl = cfg.fl
    model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes, derive_seed(cfg.seed, "model_init")).to(
        device
    )
    xi, yi = inp.synthetic_init.tensors(device)
    return train_supervised(
        model,
        xi,
        yi,
        fl.init_epochs,
        fl.init_lr,
        fl.momentum,
        fl.batch_size,
        torch_gen(cfg.seed, "init"),
        cfg.model.channels_last,
        fl.precision,
    )


def screen_synthetic(
    cfg: Config, opts: RunOptions, defense: Defense, inp: FLInputs, model: nn.Module
) -> tuple[FLInputs, dict]:
    """Step 0, data side: a screening defense keeps part of the init and of the fusion set, ranking them with the
    step-0 ``model``. Returns the screened inputs and row 0's columns: per set, the images removed and, for the
    record (the defense never sees it), the share of the attack's images removed (``tpr``) and of the others
    (``fpr``)."""
    ctx = ScreenContext(
        model, torch_gen(cfg.seed, "screen"), opts.device, opts.eval_batch_size, cfg.model.channels_last
    )
    kept: dict[str, ImageSet] = {}
    cols: dict[str, float] = {}
    for stage, syn, poisoned in (
        ("init", inp.synthetic_init, inp.poisoned_init),
        ("kd", inp.synthetic_kd, inp.poisoned_kd),
    ):
        if stage == "kd" and syn is inp.synthetic_init:  # one set for both steps: screened once
            kept["kd"] = kept["init"]
            cols.update({k.replace("screen_init", "screen_kd"): v for k, v in cols.items()})
            continue
        keep = defense.screen(syn, ctx)
        mask = np.ones(len(syn), dtype=bool)
        if keep is not None:
            mask[:] = False
            mask[np.asarray(keep, dtype=np.int64)] = True
        kept[stage] = syn.subset(np.flatnonzero(mask))
        cols[f"screen_{stage}_removed"] = int((~mask).sum())
        if poisoned is not None:
            cols[f"screen_{stage}_tpr"] = float((~mask & poisoned).sum() / poisoned.sum()) if poisoned.any() else np.nan
            cols[f"screen_{stage}_fpr"] = float((~mask & ~poisoned).sum() / max(1, (~poisoned).sum()))
    return dataclasses.replace(inp, synthetic_init=kept["init"], synthetic_kd=kept["kd"]), cols


def sample_clients(cfg: Config, rng: np.random.Generator, malicious: frozenset = frozenset()) -> np.ndarray:
    """Step 1: this round's client ids, sorted: ``clients_per_round`` of ``num_clients`` without replacement, or,
    with ``attack.schedule="fixed"``, exactly ``attackers_per_round`` of the ``malicious`` ids and the rest from the
    benign ones."""
    fl, a = cfg.fl, cfg.attack
    if a.schedule == "sampled" or not malicious:
        return np.sort(rng.choice(fl.num_clients, size=fl.clients_per_round, replace=False))
    bad = np.array(sorted(malicious))
    good = np.setdiff1d(np.arange(fl.num_clients), bad)
    m = a.attackers_per_round
    return np.sort(np.r_[rng.choice(bad, m, replace=False), rng.choice(good, fl.clients_per_round - m, replace=False)])


def attackers(ids: np.ndarray, inp: FLInputs, active: bool = True) -> int:
    """How many of this round's clients attack (ground truth, for the record; 0 once the attack has stopped)."""
    return int(sum(int(k) in inp.attack.malicious for k in ids)) if active else 0


def local_training(cfg: Config, opts: RunOptions, model: nn.Module, data, ids, rnd: int, context=None, objectives=None):
    """Step 2: the sampled clients' local models (K, P) as a tensor, each trained from ``model`` (left as it is) on
    its own data with its own generator (seed, client, round); ``context``: the defense's client-side context, if any;
    ``objectives``: per client, the attack's change to its local steps (None: honest training)."""
    fl = cfg.fl
    gens = [torch_gen(cfg.seed, "client", int(k), "round", rnd) for k in ids]
    return train_clients(
        opts.engine,
        opts.device,
        model,
        data,
        fl.local_epochs,
        fl.lr,
        fl.momentum,
        fl.batch_size,
        gens,
        cfg.model.channels_last,
        context=context,
        precision=fl.precision,
        objectives=objectives,
    )


def attacking(cfg: Config, rnd: int) -> bool:
    """Whether the malicious clients attack in round ``rnd`` (``attack.last_round``: after it they are honest)."""
    return not cfg.attack.last_round or rnd <= cfg.attack.last_round


def aggregate(
    defense: Defense,
    g: torch.Tensor,
    updates: torch.Tensor,
    weights: torch.Tensor,
    ctx: RoundContext,
    malicious: frozenset,
) -> Aggregated:
    """Step 3: the defense combines the updates (K, P) sent from global state ``g`` (robust aggregators and
    detectors act here); ``malicious`` (ground truth) only scores its detections."""
    agg = defense.aggregate(updates, weights, ctx)
    flagged = sorted(int(f) for f in (agg.flagged or []))
    columns = {
        **detection_rates(flagged, ctx.client_ids, malicious),
        **{f"defense_{k}": float(v) for k, v in (agg.info or {}).items()},
    }
    return Aggregated(g + agg.update, flagged, columns)


def fuse(
    cfg: Config,
    opts: RunOptions,
    model: nn.Module,
    thetas: torch.Tensor,
    ids: np.ndarray,
    flagged: list[int],
    kd: tuple[torch.Tensor, torch.Tensor],
    rnd: int,
    hooks=None,
) -> nn.Module:
    """Step 4, FedDF fusion: a copy of the aggregated ``model`` distilled on the synthetic set ``kd`` toward the mean
    logits of the admitted (not flagged) clients' local models ``thetas`` (all of them if every one was flagged).
    Without fusion (or zero KD epochs), the aggregated model itself. ``hooks``: the defense's
    :class:`~paper_repro.defenses.base.FusionHooks` for this round, or None."""
    fl, cl = cfg.fl, cfg.model.channels_last
    if not (fl.fusion and fl.kd_epochs > 0):
        return model
    x_kd, y_kd = kd
    admitted = [i for i, k in enumerate(ids) if int(k) not in flagged] or list(range(len(ids)))
    hooks = hooks or FusionHooks()
    teacher = ensemble_logits(model, thetas[admitted], x_kd, opts.eval_batch_size, cl, fl.precision, hooks.teacher)
    student = copy.deepcopy(model)
    return distill(
        student,
        x_kd,
        y_kd,
        teacher,
        fl.kd_epochs,
        fl.kd_lr,
        fl.momentum,
        fl.batch_size,
        fl.kd_alpha,
        fl.kd_temperature,
        torch_gen(cfg.seed, "kd", rnd),
        cl,
        fl.precision,
        hooks.student,
    )


def is_finite(model: nn.Module) -> bool:
    """False once training diverged (a non-finite weight): the run then ends with a ``diverged`` row."""
    return bool(torch.isfinite(flat_state(model)).all())


def evaluate_served(model: nn.Module, cfg: Config, inp: FLInputs, opts: RunOptions) -> dict[str, float]:
    """Step 6: ACC/ASR of ``model`` as the run evaluates (device, batch, memory format)."""
    return evaluate(
        model,
        inp.test,
        inp.asr_test,
        inp.target_class,
        opts.device,
        opts.eval_batch_size,
        cfg.model.channels_last,
        class_shares([c.y for c in inp.clients], inp.test.num_classes),
        cfg.fl.precision,
    )


def serve(
    defense: Defense, model: nn.Module, ctx: RoundContext, cfg: Config, inp: FLInputs, opts: RunOptions, timer: Timer
) -> tuple[nn.Module, dict]:
    """Steps 5–6: the post-fusion defense acts on a view of the fused ``model`` (its weights stay as fused), then the
    served model is evaluated. Returns (served model, its ACC/ASR and the two steps' seconds)."""
    with timer("post_fusion"):
        defense.info = {}
        served = defense.after_fusion(model, dataclasses.replace(ctx, global_model=model))
    with timer("eval"):
        metrics = evaluate_served(served, cfg, inp, opts)
    measured = {f"defense_{k}": float(v) for k, v in defense.info.items()}
    return served, {**metrics, **measured, **timer.take()}


def round_context(
    cfg: Config, opts: RunOptions, inp: FLInputs, model: nn.Module, rnd: int, ids: np.ndarray
) -> RoundContext:
    """What a defense may see in round ``rnd`` (its generator is derived from the seed and the round)."""
    return RoundContext(
        rnd,
        ids,
        model,
        inp.synthetic_kd,
        torch_gen(cfg.seed, "defense", rnd),
        opts.device,
        cfg.fl.num_rounds,
        opts.eval_batch_size,
        cfg.model.channels_last,
        LocalTraining(cfg.fl.local_epochs, cfg.fl.lr, cfg.fl.momentum, cfg.fl.batch_size, cfg.fl.precision),
    )


def fedavg_weights(cfg: Config, inp: FLInputs, ids: np.ndarray) -> torch.Tensor:
    """(K,) weights of the sampled clients in aggregation: their data sizes (``fl.weighting="samples"``) or ones."""
    if cfg.fl.weighting != "samples":
        return torch.ones(len(ids))
    return torch.tensor([len(inp.clients[int(k)]) for k in ids], dtype=torch.float32)


def finish_row(row: dict) -> dict:
    """A round's row with its totals: the defense's seconds (aggregation + post-fusion) and the round's (its steps)."""
    steps = ("local", "aggregate", "fusion", "post_fusion", "eval")
    return {
        **row,
        "defense_seconds": row.get("aggregate_seconds", 0.0) + row.get("post_fusion_seconds", 0.0),
        "round_seconds": sum(row.get(f"{s}_seconds", 0.0) for s in steps),
    }


# ------------------------------------------------------------------------------------------------ the loop
def run_federated(
    cfg: Config,
    inp: FLInputs,
    defense: Defense,
    opts: RunOptions | None = None,
    progress: bool = True,
    initial_model: nn.Module | None = None,
    alongside: Mapping[str, Defense] | None = None,
) -> FLOutput:
    """Run ``cfg.fl.num_rounds`` rounds of FM-integrated FL with ``defense``.

    ``initial_model``: the step-0 model if it was already trained (e.g. loaded from a cache; left as it is), else it
    is trained here. ``alongside``: more post-fusion defenses (``trains_like_none``, as ``defense`` must then be)
    served from this same training every round, each with its own output in ``FLOutput.alongside``."""
    opts = options_for(cfg.profile, opts)
    alongside = dict(alongside or {})
    if alongside and not all(d.trains_like_none for d in (defense, *alongside.values())):
        raise ValueError("defenses evaluated alongside must all act only after fusion (trains_like_none)")
    fl, dev, timer = cfg.fl, opts.device, Timer()
    out = FLOutput(alongside={name: FLOutput() for name in alongside})
    served_by = [(defense, out), *((alongside[n], o) for n, o in out.alongside.items())]
    # 0. initialise the global model by supervised training on the (possibly poisoned) synthetic set
    with timer("init"):
        model = copy.deepcopy(initial_model) if initial_model is not None else init_global_model(cfg, inp, dev)
    screened = {}
    if defense.screens:  # a data-side defense screens the synthetic set, and the server initialises on what it kept
        with timer("screen"):
            inp, screened = screen_synthetic(cfg, opts, defense, inp, model)
        with timer("init"):
            model = init_global_model(cfg, inp, dev)
    first = {"round": 0, **evaluate_served(model, cfg, inp, opts), **screened, **timer.take(), "status": OK}
    for _, o in served_by:
        o.history.append(dict(first))
        o.model = o.fused = model
    clients = [inp.attack.local_data(k, d).tensors(dev) for k, d in enumerate(inp.clients)]  # malicious: poisoned
    honest = [d.tensors(dev) for d in inp.clients] if cfg.attack.last_round else clients  # after the attack stops
    kd = inp.synthetic_kd.tensors(dev)
    sample_rng = np_rng(cfg.seed, "client_sampling")

    for rnd in tqdm(range(1, fl.num_rounds + 1), desc="FL rounds", disable=not progress):
        # 1. sample clients without replacement
        ids = sample_clients(cfg, sample_rng, inp.attack.malicious)
        # 2. local training from the global model; malicious clients train on poisoned data (with the attack's own
        # steps, if it has them) and craft their update, until the attack's last round
        active = attacking(cfg, rnd)
        with timer("local"):
            g = flat_state(model)
            if active:
                inp.attack.begin_round(rnd, g)
                data, objectives = [clients[k] for k in ids], [inp.attack.local_objective(int(k)) for k in ids]
            else:
                data, objectives = [honest[k] for k in ids], None
            thetas = local_training(cfg, opts, model, data, ids, rnd, defense.client_context(), objectives)
            deltas = [theta - g for theta in thetas]
            if active:
                deltas = [inp.attack.craft_update(int(k), d) for k, d in zip(ids, deltas)]
            updates = torch.stack(deltas)
        # 3. aggregation through the defense (robust aggregators and detectors act here)
        ctx = round_context(cfg, opts, inp, model, rnd, ids)
        with timer("aggregate"):
            agg = aggregate(defense, g, updates, fedavg_weights(cfg, inp, ids), ctx, inp.attack.malicious)
            model = load_flat_state(copy.deepcopy(model), agg.state)
        # 4. FedDF fusion on the server's synthetic set
        with timer("fusion"):
            hooks = defense.fusion_hooks(dataclasses.replace(ctx, global_model=model))
            model = fuse(cfg, opts, model, thetas, ids, agg.flagged, kd, rnd, hooks)
        trained = {"round": rnd, "status": OK, "num_attackers": attackers(ids, inp, active)}
        trained |= {**agg.columns, **timer.take()}
        if not is_finite(model):  # diverged: the run ends here and reports no ACC/ASR
            for _, o in served_by:
                o.history.append({**trained, "status": DIVERGED, **no_metrics()})
            break
        # 5.–6. each post-fusion defense on a view of the fused model, then ACC/ASR of the model the server serves
        for i, (d, o) in enumerate(served_by):
            o.model, metrics = serve(
                d, model, ctx if i == 0 else round_context(cfg, opts, inp, model, rnd, ids), cfg, inp, opts, timer
            )
            o.history.append(finish_row({**trained, **metrics, **({"shared_training": True} if i else {})}))
            o.flagged.append(agg.flagged)
            o.fused = model
    return out
