"""``act_bound`` — the paper's defense, reconstructed: after every fusion, learn upper bounds on hidden
activations of the fused global model with the (possibly poisoned) synthetic set; the weights stay untouched.

[C: 2410.17573 abstracts: data-free, server-side, "activation upper bounds of the post-fusion global model",
optimised with synthetic data alongside FL training, parameters unchanged.] Everything else is [R]
(docs/paper.md, "The defense") and a parameter here; the defaults were chosen by experiment on the quick profile
(docs/defenses.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from ..activation_bounds import (
    GRANULARITIES,
    SITE_PRESETS,
    BoundedModel,
    check_sites,
    clip_hooks,
    fit_bounds,
    max_activations,
    resolve_sites,
)
from ..params import Field, params
from ..rng import np_rng
from .base import Defense, FusionHooks, RoundContext

Sites = Literal[SITE_PRESETS] | list[Annotated[str, Field(min_length=1)]]
"""Where bounds go: a preset of :func:`resolve_sites` or a list of module names (checked against the model)."""


@params
class BoundParams:
    """The knobs shared by the activation-bound defenses (act_bound, MM-BM, MMAC), at act_bound's defaults."""

    sites: Sites = Field("hidden", description="module names or a preset ('hidden': all ReLUs but the first)")
    granularity: Literal[GRANULARITIES] = Field(
        "neuron", description="bound shape: neuron (channel × position), channel (MM-BM) or layer"
    )
    per_class: int = Field(50, ge=0, description="synthetic images per label used for fitting (0: all)")
    init: Literal["data_max", "constant"] = Field(
        "data_max", description="start bounds at the init_quantile of the activations, or at init_value"
    )
    init_value: float = Field(8.0, gt=0, description="the starting bound of init='constant'")
    init_quantile: float = Field(
        0.9, gt=0, le=1, description="1.0 = maximum (MM-BM); 0.9 assumes < 10 % of the fitting set is poisoned"
    )
    epochs: int = Field(2, ge=0, description="epochs of Adam on the bounds only (MM-BM: 50)")
    lr: float = Field(0.01, gt=0, description="Adam learning rate on the bounds (MM-BM: 0.1)")
    batch_size: int = Field(200, ge=1, description="fitting batch (MM-BM: 200)")
    c0: float = Field(0.05, ge=0, description="initial multiplier c of the bound penalty (MM-BM: 0.5)")
    growth: float = Field(1.2, ge=1, description="factor by which c moves toward target_agreement (MM-BM: 1.2)")
    target_agreement: float = Field(
        0.95, gt=0, le=1, description="agreement of bounded and unbounded model that c aims at (MM-BM: 0.95)"
    )
    adapt_every: int = Field(2, ge=1, description="epochs between moves of c (MM-BM: 10)")
    adapt_after: int = Field(0, ge=0, description="epochs before c first moves (MM-BM: 10)")
    schedule: Literal["every_round", "final"] = Field(
        "every_round", description="fit after every fusion, or only after the last"
    )
    fit_draw: Literal["round", "run"] = Field(
        "round", description="the fitting images drawn by the round alone (as first defined), or by run seed and round"
    )


@params
class ActBoundParams(BoundParams):
    """act_bound's knobs: the shared ones and its own (trimmed fidelity, penalty, where the bounds act)."""

    trim: float = Field(
        0.25, ge=0, lt=1, description="share of each batch with the largest fidelity loss left out (0: MM-BM)"
    )
    penalty: Literal["l2", "none"] = Field("l2", description="c·Σ‖b_l‖₂ on the bounds, or no penalty")
    deploy: Literal["server", "clients"] = Field(
        "server", description="bounds only in the served model, or clients also train under last round's bounds"
    )
    fusion: Literal["off", "teachers", "student", "both"] = Field(
        "off",
        description="bounds inside FedDF fusion too: each teacher predicts, and/or the student is distilled, under "
        "bounds at the init_quantile of its own activations on the fitting images",
    )


def fit_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random samples of every (synthetic) label, drawn with ``rng``; 0 = all samples."""
    if per_class <= 0:
        return np.arange(len(labels))
    return np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    )


def bound_shift(start: dict, end: dict) -> float:
    """How far fitting moved the bounds: Σ|b_end − b_start| / Σ b_start over every bounded unit (0: not at all)."""
    moved = sum(float((end[s].cpu() - start[s].cpu()).abs().sum()) for s in start)
    total = sum(float(start[s].abs().sum()) for s in start)
    return moved / total if total > 0 else 0.0


class ActBound(Defense):
    """Upper bounds b ≥ 0 on the post-ReLU activations at ``sites`` of the fused global model, re-fitted after each
    fusion on the synthetic set; the server evaluates/serves the bounded model, the weights stay as fused.

    Fitting = (1) robust data-driven initialisation: each bounded unit starts at the ``init_quantile`` quantile of
    its activations over the fitting images (a poisoned minority smaller than 1 − q cannot raise a bound); then
    (2) ``epochs`` of MM-BM's objective, trimmed: fidelity ‖f_b(x) − f(x)‖² on the (1 − ``trim``) best-fitting
    images of each batch + c·Σ_l‖b_l‖₂, c adapted toward ``target_agreement``.

    The defaults were chosen on the quick profile; how, and what the alternatives measured, is in
    docs/defenses.md ("How act_bound's defaults were chosen"; ``python benchmarks/act_bound_knobs.py`` reproduces it).

    Parameters: :class:`ActBoundParams` (all [R]).
    """

    name = "act_bound"

    Params = ActBoundParams

    def __init__(self, **params):
        super().__init__(**params)
        self.bounds: dict | None = None
        self.log: dict = {}

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        check_sites(cfg, self.sites)

    fusion = "off"
    """Bounds inside fusion (a field of ``act_bound``'s Params; the variants that lack it never act there)."""

    @property
    def trains_like_none(self) -> bool:
        # bounds shipped to clients, or acting inside fusion, change the training
        return self.deploy == "server" and self.fusion == "off"

    def fusion_hooks(self, ctx: RoundContext) -> FusionHooks | None:
        if self.fusion == "off":
            return None
        x = ctx.as_input(self.fit_data(ctx))
        sites = resolve_sites(ctx.global_model, self.sites)

        @contextmanager
        def bounded(model: nn.Module):
            with clip_hooks(model, self.initial_bounds(model, x, sites)):
                yield

        return FusionHooks(
            teacher=bounded if self.fusion in ("teachers", "both") else None,
            student=bounded if self.fusion in ("student", "both") else None,
        )

    def client_context(self):
        if self.deploy != "clients" or self.bounds is None:
            return None
        bounds = self.bounds
        return lambda model: clip_hooks(model, bounds)

    def fit_rng(self, ctx: RoundContext, by_round) -> np.random.Generator:
        """The fitting subset's randomness: ``by_round`` (the round alone: every seed fits on the same images, as
        first defined) or, with ``fit_draw="run"``, a draw from the round's generator (run seed and round), so that
        seeds also vary the defense's fitting subset (the defense study)."""
        if self.fit_draw == "round":
            return by_round
        return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator)))

    def fit_data(self, ctx: RoundContext):
        idx = fit_subset(ctx.synthetic.y, self.per_class, self.fit_rng(ctx, np_rng(ctx.round, "act_bound_fit")))
        return ctx.synthetic.subset(idx).tensors(ctx.device)[0]

    def initial_bounds(self, model: nn.Module, x, sites: list[str]) -> dict:
        data_max = max_activations(model, x, sites, self.granularity, self.init_quantile)
        if self.init == "constant":
            return {s: v.new_full(v.shape, self.init_value) for s, v in data_max.items()}
        return data_max

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        x = ctx.as_input(self.fit_data(ctx))
        sites = resolve_sites(model, self.sites)
        start = self.initial_bounds(model, x, sites)
        bounded = BoundedModel(model, start)
        self.log = fit_bounds(
            bounded,
            x,
            self.epochs,
            self.lr,
            self.c0,
            self.growth,
            self.target_agreement,
            self.adapt_every,
            self.adapt_after,
            self.batch_size,
            ctx.generator,
            trim=self.trim,
            penalty=self.penalty,
        )
        self.bounds = bounded.bound_dict()
        self.info = {"bound_shift": bound_shift(start, self.bounds)}
        return bounded
