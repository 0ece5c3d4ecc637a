"""Work a run can share with others instead of repeating, wrapped around the FL loop (never inside it):

- the initial model (step 0), cached on disk by a hash of everything that trains it, so every run at a seed with
  the same synthetic init set (all defenses, both partitions, classic vs no attack) trains it once;
- the trajectory (weights after every fusion) of a run without defense, recorded through the loop's ``on_fused``
  hook and replayed by every run whose defense acts only at step 5 on a view of the fused model
  (``Defense.trains_like_none``): such a defense leaves the weights, so every later round, as without it.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .codehash import code_digest_of, library_versions
from .config import Config
from .defenses import Defense
from .fl import DIVERGED, OK, FLInputs, FLOutput, defend_and_evaluate, evaluate_served, init_global_model, round_context
from .metrics import no_metrics
from .models import build_model, flat_state, load_flat_state
from .options import RunOptions
from .progress import tqdm
from .rng import derive_seed
from .store import save_atomic, stable_hash


class TrajectoryError(RuntimeError):
    """A saved trajectory is unreadable or belongs to another run; the message names the file and the fix."""


TRAINING_SECONDS = ("local_seconds", "aggregate_seconds", "fusion_seconds")
"""Timing columns of steps 1–4, which a replayed run copies from the run it replays."""
DETECTION_COLUMNS = ("num_flagged", "tpr", "fpr")


def initial_model_key(cfg: Config, inp: FLInputs) -> str:
    """Key of the step-0 model: a hash of everything that trains it (architecture, seeds, synthetic init set,
    initialisation hyper-parameters)."""
    fl = cfg.fl
    src = {"model": cfg.model.name, "shape": list(inp.test.shape), "classes": inp.test.num_classes,
           "init_seed": derive_seed(cfg.seed, "model_init"), "order_seed": cfg.seed,
           "synthetic": inp.synthetic_init.digest(), "epochs": fl.init_epochs, "lr": fl.init_lr,
           "momentum": fl.momentum, "batch_size": fl.batch_size, "channels_last": cfg.model.channels_last,
           "code": code_digest_of(init_global_model), "libraries": library_versions(("torch",))}
    if fl.precision != "fp32":  # fp32 models keep the key they had before the option existed
        src["precision"] = fl.precision
    return f"{cfg.model.name}_{stable_hash(src, 16)}"


def cached_initial_model(cfg: Config, inp: FLInputs, cache: Path | None, device: str = "cpu",
                         refresh: bool = False) -> tuple[nn.Module, bool]:
    """Step 0 through a disk cache: the model trained on the synthetic init set, and whether it was loaded
    (``refresh``: train again and replace the cached model)."""
    if cache is None:
        return init_global_model(cfg, inp, device), False
    key = initial_model_key(cfg, inp)
    path = Path(cache) / f"{key}.pt"
    if path.exists() and not refresh:
        model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes,
                            derive_seed(cfg.seed, "model_init")).to(device)
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(saved, dict) or "key" not in saved:
                raise ValueError("it was written by an older version of this package")
            if saved["key"] != key:
                raise ValueError(f"it holds the model of key {saved['key']!r} (a file copied over it?)")
            model.load_state_dict(saved["state"])
            return model, True
        except Exception as e:  # truncated or foreign file: say so, then train again
            warnings.warn(f"cached initial model {path} is unreadable ({type(e).__name__}: {e}); training it again",
                          stacklevel=2)
    model = init_global_model(cfg, inp, device)
    save_atomic(lambda tmp: torch.save({"key": key, "state": model.state_dict()}, tmp), path)
    return model, False


@dataclass
class Trajectory:
    """The global model after initialisation and after every fusion, each round's sampled clients and the round's
    step 1–4 columns (seconds, detection rates)."""

    states: torch.Tensor
    """(R + 1, P): flat state after initialisation (row 0) and after the fusion of round r (row r)."""
    client_ids: list[np.ndarray]
    rows: list[dict]
    run: str = ""
    """Name (with key) of the run folder that recorded it: checked before a replay."""

    def save(self, path: Path) -> None:
        data = {"states": self.states, "client_ids": [a.tolist() for a in self.client_ids], "rows": self.rows,
                "run": self.run}
        save_atomic(lambda tmp: torch.save(data, tmp), path)

    @classmethod
    def load(cls, path: Path) -> Trajectory:
        try:
            d = torch.load(path, weights_only=True)
        except Exception as e:  # truncated or foreign file: name it and say how to clear it
            raise TrajectoryError(f"{path} is unreadable ({type(e).__name__}): delete its run folder "
                                  f"{Path(path).parent} to recompute it") from None
        return cls(d["states"], [np.asarray(a, dtype=np.int64) for a in d["client_ids"]], d["rows"], d.get("run", ""))

    def model_at(self, cfg: Config, inp: FLInputs, rnd: int = -1, device: str = "cpu") -> nn.Module:
        """A fresh model of ``cfg`` holding the weights after round ``rnd`` (0 = initialisation, -1 = the last)."""
        model = build_model(cfg.model.name, inp.test.shape, inp.test.num_classes, 0).to(device)
        return load_flat_state(model, self.states[rnd].to(device))


@dataclass
class TrajectoryRecorder:
    """An ``on_fused`` hook for :func:`paper_repro.fl.run_federated` that keeps the weights after every fusion;
    build it on the initial model before the loop trains it."""

    initial: nn.Module
    states: list[torch.Tensor] = field(default_factory=list)
    client_ids: list[np.ndarray] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.states.append(flat_state(self.initial))  # a copy: the loop trains the model in place

    def __call__(self, rnd: int, model: nn.Module, ids: np.ndarray, row: dict) -> None:
        self.states.append(flat_state(model))
        self.client_ids.append(ids)
        self.rows.append({k: row[k] for k in (*TRAINING_SECONDS, *DETECTION_COLUMNS)})

    def trajectory(self, run: str = "") -> Trajectory:
        return Trajectory(torch.stack(self.states), self.client_ids, self.rows, run)


def replay_federated(cfg: Config, inp: FLInputs, defense: Defense, trajectory: Trajectory,
                     opts: RunOptions | None = None, progress: bool = True) -> FLOutput:
    """The run of ``cfg`` with ``defense``, its steps 0–4 taken from ``trajectory`` (recorded without a defense)
    and steps 5–6 computed: the same results as :func:`paper_repro.fl.run_federated` for a defense with
    ``trains_like_none``. Copied columns: the step 1–4 seconds and detection rates (``shared_training`` = True);
    ``round_seconds`` is the copied steps 1–4 plus this run's steps 5–6."""
    if not defense.trains_like_none:
        raise ValueError(f"defense {defense.name!r} changes training, so it cannot replay a no-defense trajectory")
    opts = opts or RunOptions.for_profile(cfg.profile)
    out = FLOutput()
    t = time.perf_counter()
    model = trajectory.model_at(cfg, inp, 0, opts.device)
    out.history.append({"round": 0, **evaluate_served(model, cfg, inp, opts), "init_seconds": time.perf_counter() - t,
                        "status": OK})
    out.model = model
    for rnd in tqdm(range(1, cfg.fl.num_rounds + 1), desc="FL rounds (replayed)", disable=not progress):
        t_round = time.perf_counter()
        if rnd > len(trajectory.rows):  # the recorded run diverged after this many rounds: so does this one
            out.history.append({"round": rnd, "status": DIVERGED, **no_metrics()})
            break
        row = {"round": rnd, "status": OK, **trajectory.rows[rnd - 1]}
        ctx = round_context(cfg, opts, inp, model, rnd)
        ctx.client_ids = trajectory.client_ids[rnd - 1]
        load_flat_state(model, trajectory.states[rnd].to(opts.device))
        out.model = defend_and_evaluate(defense, model, ctx, cfg, inp, opts, row)
        row["round_seconds"] = time.perf_counter() - t_round + sum(row[k] for k in TRAINING_SECONDS)
        row["shared_training"] = True
        out.history.append(row)
        out.flagged.append([])
    return out
