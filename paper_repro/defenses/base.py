"""The defense interface: step 3 (aggregate client updates) and step 5 (post-fusion) hooks, both optional."""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import ImageSet
from ..models import flat_state, load_flat_state
from ..params import NoParams, build
from ..training import as_format, predict_logits


@dataclass(frozen=True)
class LocalTraining:
    """The clients' local-training settings of a run (``cfg.fl``)."""

    epochs: int
    lr: float
    momentum: float
    batch_size: int
    precision: str = "fp32"


@dataclass(frozen=True)
class FusionHooks:
    """How a defense acts inside FedDF fusion (step 4): each a function model → context manager, or None."""

    teacher: object = None
    """Under which each client model (a teacher) predicts the synthetic set."""
    student: object = None
    """Under which the student is distilled."""


@dataclass
class RoundContext:
    """What a defense may look at in one round (read-only by convention)."""

    round: int
    client_ids: np.ndarray
    """Ids of this round's sampled clients, aligned with the rows of ``updates``."""
    global_model: nn.Module
    """The global model before aggregation (step 3) or after fusion (step 5)."""
    synthetic: ImageSet
    """The server's synthetic set (possibly poisoned: the defense must not assume it is clean)."""
    generator: torch.Generator
    """Randomness for this defense in this round."""
    device: str = "cpu"
    num_rounds: int = 0
    """Total rounds of the run (a defense may act only in the final one)."""
    eval_batch_size: int = 1000
    channels_last: bool = False
    """How the run evaluates models (``RunOptions.eval_batch_size``, ``model.channels_last``), used by
    :meth:`predict`."""
    local: LocalTraining | None = None
    """How the run's clients train (a defense that trains as a client does, e.g. FLTrust's root update)."""

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the run trains in (a channels_last model is slow on contiguous images)."""
        return as_format(x, self.channels_last)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``model``'s logits on ``x``, batched as the run evaluates."""
        return predict_logits(model, x, self.eval_batch_size, self.channels_last)

    @property
    def is_final(self) -> bool:
        return self.round >= self.num_rounds


@dataclass
class AggregateResult:
    """The aggregated update (P,), for detection defenses the client ids they flagged, and ``info``: numbers the
    defense measured this round (saved in the round's row as ``defense_<key>``; e.g. MARS's cluster distance, from
    which its threshold is calibrated)."""

    update: torch.Tensor
    flagged: list[int] | None = None
    info: dict[str, float] | None = None


def local_models(ctx: RoundContext, updates: torch.Tensor):
    """Yield each client's local model θ_i = G_t + Δ_i, reusing one copy of the global model (valid until the next
    item is drawn)."""
    g = flat_state(ctx.global_model)
    local = copy.deepcopy(ctx.global_model)
    for u in updates:
        yield load_flat_state(local, g + u)


@dataclass
class ScreenContext:
    """What a data-side defense may look at before the rounds (step 0): the model the server trained on the whole
    synthetic set, and how the run evaluates models."""

    model: nn.Module
    """The step-0 model, trained on the unscreened synthetic init set (its features rank the images)."""
    generator: torch.Generator
    device: str = "cpu"
    eval_batch_size: int = 1000
    channels_last: bool = False


class Defense:
    """No defense: sample-weighted FedAvg at step 3, nothing at step 5.

    Parameters: a subclass declares them as ``Params``, a :func:`paper_repro.params.params` dataclass (one typed,
    validated field per knob, with its default, range and description); ``Defense(**values)`` validates them once
    and sets each as an attribute of the same name (``self.params`` holds them all)."""

    name = "none"
    Params: type = NoParams

    def __init__(self, **params):
        self.params = build(self.Params, params, f"defense {self.name!r}")
        for key, value in dataclasses.asdict(self.params).items():
            setattr(self, key, value)

    @property
    def trains_like_none(self) -> bool:
        """True when the defense acts only at step 5, on a view of the fused model: it aggregates as FedAvg and ships
        nothing to clients, so the weights after every round are those of the run without a defense, and such a
        run is served from that run's training, side by side with the other such defenses
        (:func:`paper_repro.fl.run_federated`'s ``alongside``), instead of repeating it."""
        cls = type(self)
        return not self.screens and cls.aggregate is Defense.aggregate and cls.client_context is Defense.client_context

    @property
    def screens(self) -> bool:
        """True when the defense screens the synthetic set before the rounds (it overrides :meth:`screen`)."""
        return type(self).screen is not Defense.screen

    min_clients = 1
    """Fewest updates per round with which the defense still does something (a median of two values is their mean)."""

    def check_config(self, cfg) -> None:
        """Raise ValueError if this defense cannot work with the config ``cfg``, or would do nothing with it (called
        when a config is built, before any data is loaded; e.g. Krum needs more clients per round than 2f + 2).
        Subclasses that add checks call this one first."""
        if cfg.fl.clients_per_round < self.min_clients:
            raise ValueError(
                f"defense {self.name!r} needs at least {self.min_clients} updates per round to act (with fewer it is "
                f"FedAvg or undefined); fl.clients_per_round={cfg.fl.clients_per_round}: raise it"
            )

    def screen(self, synthetic: ImageSet, ctx: ScreenContext) -> np.ndarray | None:
        """Step 0, data side: the sorted indices of ``synthetic`` the server keeps (None: all). Called on the init and
        on the fusion set before the rounds; the server then initialises again on the kept init images."""
        return None

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> AggregateResult:
        """updates (K, P), weights (K,) → aggregated update (P,)."""
        w = weights / weights.sum()
        return AggregateResult(w @ updates)

    def client_context(self):
        """None, or a function model → context manager under which a client trains its copy of the global model
        (e.g. with the server's activation bounds active)."""
        return None

    def fusion_hooks(self, ctx: RoundContext) -> FusionHooks | None:
        """None, or how this defense acts inside this round's FedDF fusion (``ctx.global_model``: the aggregated
        model, the student's start). A defense that returns hooks changes training: it is not ``trains_like_none``."""
        return None

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        """Return the model to evaluate/distribute (the same object when the defense does nothing here). A defense
        may leave numbers it measured in ``self.info`` (saved in the round's row as ``defense_<key>``)."""
        return model

    info: dict = {}
    """Numbers the last :meth:`after_fusion` measured (empty: none)."""


def without_nonfinite(aggregate):
    """Decorator for a robust defense's ``aggregate``: updates holding NaN or inf are outliers. They are left out
    (``aggregate`` sees only the finite ones, with ``ctx.client_ids`` to match) and reported as flagged. When every
    update is non-finite there is nothing to leave out, and the run diverges visibly."""

    @functools.wraps(aggregate)
    def wrapped(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> AggregateResult:
        ok = torch.isfinite(updates).all(dim=1).cpu().numpy()
        if ok.all() or not ok.any():
            return aggregate(self, updates, weights, ctx)
        keep = np.flatnonzero(ok)
        res = aggregate(self, updates[keep], weights[keep], dataclasses.replace(ctx, client_ids=ctx.client_ids[keep]))
        bad = [int(k) for k in ctx.client_ids[~ok]]
        return AggregateResult(res.update, sorted([*(res.flagged or []), *bad]), res.info)

    return wrapped
