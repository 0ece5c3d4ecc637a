"""``act_bound`` — the paper's defense, reconstructed: after every fusion, learn upper bounds on hidden
activations of the fused global model with the (possibly poisoned) synthetic set; the weights stay untouched.

[C: 2410.17573 abstracts: data-free, server-side, "activation upper bounds of the post-fusion global model",
optimised with synthetic data alongside FL training, parameters unchanged.] Everything else is [R]
(docs/paper.md, "The defense") and a parameter here; the defaults were chosen by experiment on the quick profile
(docs/defenses.md).
"""

from __future__ import annotations

import numpy as np
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
from ..rng import np_rng
from .base import Defense, RoundContext

INITS = ("data_max", "constant")
SCHEDULES = ("every_round", "final")


def fit_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random samples of every (synthetic) label, drawn with ``rng``; 0 = all samples."""
    if per_class <= 0:
        return np.arange(len(labels))
    return np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    )


class ActBound(Defense):
    """Upper bounds b ≥ 0 on the post-ReLU activations at ``sites`` of the fused global model, re-fitted after each
    fusion on the synthetic set; the server evaluates/serves the bounded model, the weights stay as fused.

    Fitting = (1) robust data-driven initialisation: each bounded unit starts at the ``init_quantile`` quantile of
    its activations over the fitting images (a poisoned minority smaller than 1 − q cannot raise a bound); then
    (2) ``epochs`` of MM-BM's objective, trimmed: fidelity ‖f_b(x) − f(x)‖² on the (1 − ``trim``) best-fitting
    images of each batch + c·Σ_l‖b_l‖₂, c adapted toward ``target_agreement``.

    The defaults were chosen on the quick profile; how, and what the alternatives measured, is in
    docs/defenses.md ("How act_bound's defaults were chosen"; ``python benchmarks/act_bound_knobs.py`` reproduces it).

    Parameters (all [R]):
      sites: module names or a preset of :func:`resolve_sites` ("hidden": all ReLUs but the first).
      granularity: "neuron" (channel × position), "channel" (MM-BM) or "layer".
      per_class: synthetic images per label used for fitting (MM-BM: 50); 0 = the whole synthetic set.
      init: "data_max" (the ``init_quantile`` quantile of the activations) or "constant" (``init_value``).
      init_quantile: 1.0 = maximum (MM-BM-like); 0.9 assumes a poisoned share of the fitting set below 10 %.
      epochs, lr, batch_size: Adam on the bounds only (MM-BM: 50 epochs, lr 0.1, batch 200).
      c0, growth, target_agreement, adapt_every, adapt_after: the multiplier schedule (MM-BM: 0.5, 1.2, 0.95, 10, 10).
      trim: fraction of each batch with the largest fidelity loss left out of the fidelity term and of the agreement
        (docs/paper.md; 0 = plain MM-BM).
      schedule: "every_round" or "final" (fit only after the last fusion).
      deploy: "server" (bounds only in the served/evaluated model) or "clients" (clients also train under last
        round's bounds; gradients vanish above a bound).
    """

    name = "act_bound"

    def __init__(
        self,
        sites: str | list[str] = "hidden",
        granularity: str = "neuron",
        per_class: int = 50,
        init: str = "data_max",
        init_value: float = 8.0,
        init_quantile: float = 0.9,
        epochs: int = 2,
        lr: float = 0.01,
        batch_size: int = 200,
        c0: float = 0.05,
        growth: float = 1.2,
        target_agreement: float = 0.95,
        adapt_every: int = 2,
        adapt_after: int = 0,
        trim: float = 0.25,
        schedule: str = "every_round",
        penalty: str = "l2",
        deploy: str = "server",
    ):
        if init not in INITS:
            raise ValueError(f"init={init!r}; choose one of {INITS}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; choose one of {SCHEDULES}")
        if not 0 <= trim < 1:
            raise ValueError(f"trim={trim} must be in [0, 1)")
        if deploy not in ("server", "clients"):
            raise ValueError(f"deploy={deploy!r}; choose server or clients")
        if penalty not in ("l2", "none"):
            raise ValueError(f"penalty={penalty!r}; choose l2 or none")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity={granularity!r}; choose one of {GRANULARITIES}")
        if isinstance(sites, str) and sites not in SITE_PRESETS:
            raise ValueError(f"sites={sites!r}; use a preset {SITE_PRESETS} or a list of module names")
        for name, ok in (
            ("per_class", per_class >= 0),
            ("init_quantile", 0 < init_quantile <= 1),
            ("epochs", epochs >= 0),
            ("lr", lr > 0),
            ("batch_size", batch_size >= 1),
            ("c0", c0 >= 0),
            ("growth", growth >= 1),
            ("target_agreement", 0 < target_agreement <= 1),
            ("adapt_every", adapt_every >= 1),
            ("adapt_after", adapt_after >= 0),
            ("init_value", init_value > 0),
        ):
            if not ok:
                raise ValueError(f"{name}={locals()[name]!r} is out of range (see the parameters of ActBound)")
        self.sites, self.granularity, self.per_class = sites, granularity, per_class
        self.init, self.init_value, self.epochs, self.lr, self.batch_size = init, init_value, epochs, lr, batch_size
        self.c0, self.growth, self.target_agreement = c0, growth, target_agreement
        self.adapt_every, self.adapt_after, self.trim = adapt_every, adapt_after, trim
        self.schedule, self.penalty, self.deploy = schedule, penalty, deploy
        self.init_quantile = init_quantile
        self.bounds: dict | None = None
        self.log: dict = {}

    def check_config(self, cfg) -> None:
        check_sites(cfg, self.sites)

    @property
    def trains_like_none(self) -> bool:
        return self.deploy == "server"  # bounds shipped to clients change their training

    def client_context(self):
        if self.deploy != "clients" or self.bounds is None:
            return None
        bounds = self.bounds
        return lambda model: clip_hooks(model, bounds)

    def fit_data(self, ctx: RoundContext):
        # the fitting images depend on the round only (not the run seed): kept so that committed numbers stay valid
        idx = fit_subset(ctx.synthetic.y, self.per_class, np_rng(ctx.round, "act_bound_fit"))
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
        bounded = BoundedModel(model, self.initial_bounds(model, x, sites))
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
        return bounded
