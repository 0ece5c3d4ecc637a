"""``act_bound`` — the paper's defense, reconstructed: after every fusion, learn upper bounds on hidden
activations of the fused global model with the (possibly poisoned) synthetic set; the weights stay untouched.

[C: 2410.17573 abstracts: data-free, server-side, "activation upper bounds of the post-fusion global model",
optimised with synthetic data alongside FL training, parameters unchanged.] Everything else is [R] (PAPER.md §4.5–4.7)
and a parameter here; the defaults were chosen by experiment on the quick profile (see the docstring of ``ActBound``).
"""
from __future__ import annotations

import numpy as np
from torch import nn

from ..rng import derive_seed
from .activation_bounds import BoundedModel, fit_bounds, max_activations, resolve_sites
from .base import Defense, RoundContext

INITS = ("data_max", "constant")
SCHEDULES = ("every_round", "final")


def fit_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random samples of every (synthetic) label; 0 = all samples."""
    if per_class <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                   for c in np.unique(labels)]))


class ActBound(Defense):
    """Per-channel upper bounds b ≥ 0 at ``sites``, fitted after each fusion by minimising the trimmed fidelity
    ‖f_b(x) − f(x)‖² on synthetic images plus c·Σ_l‖b_l‖₂ (MM-BM's objective), c adapted toward
    ``target_agreement``; the bounded model is what the server evaluates/serves (``deploy="server"``).

    Parameters (defaults [R]):
      sites: module names or a preset of :func:`resolve_sites` ("hidden": all ReLUs but the first).
      granularity: "channel" (per channel/neuron) or "layer".
      per_class: synthetic images per class used for fitting (MM-BM uses 50); 0 = the whole synthetic set.
      init: "data_max" (each channel's max activation on the fitting data) or "constant" (``init_value``).
      epochs, lr, batch_size: Adam on the bounds only (MM-BM: lr 0.1, batch 200).
      c0, growth, target_agreement, adapt_every, adapt_after: the multiplier schedule (MM-BM: 0.5, 1.2, 0.95, 10, 10).
      trim: fraction of each batch with the largest fidelity loss left out of the fidelity term and of the agreement
        (the poisoned-minority remedy of PAPER.md §4.6; 0 = plain MM-BM).
      warm_start: start each round from last round's bounds.
      schedule: "every_round" or "final" (fit only after the last fusion).
    """

    name = "act_bound"

    def __init__(self, sites: str | list[str] = "hidden", granularity: str = "channel", per_class: int = 50,
                 init: str = "data_max", init_value: float = 8.0, epochs: int = 10, lr: float = 0.1,
                 batch_size: int = 200, c0: float = 0.5, growth: float = 1.2, target_agreement: float = 0.95,
                 adapt_every: int = 2, adapt_after: int = 0, trim: float = 0.25, warm_start: bool = True,
                 schedule: str = "every_round", penalty: str = "l2"):
        if init not in INITS:
            raise ValueError(f"init={init!r}; choose one of {INITS}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; choose one of {SCHEDULES}")
        if not 0 <= trim < 1:
            raise ValueError(f"trim={trim} must be in [0, 1)")
        if penalty not in ("l2", "none"):
            raise ValueError(f"penalty={penalty!r}; choose l2 or none")
        self.sites, self.granularity, self.per_class = sites, granularity, per_class
        self.init, self.init_value, self.epochs, self.lr, self.batch_size = init, init_value, epochs, lr, batch_size
        self.c0, self.growth, self.target_agreement = c0, growth, target_agreement
        self.adapt_every, self.adapt_after, self.trim = adapt_every, adapt_after, trim
        self.warm_start, self.schedule, self.penalty = warm_start, schedule, penalty
        self.bounds: dict | None = None
        self.c = c0
        self.log: dict = {}

    def fit_data(self, ctx: RoundContext):
        idx = fit_subset(ctx.synthetic.y, self.per_class, derive_seed(ctx.round, "act_bound_fit"))
        return ctx.synthetic.subset(idx).tensors(ctx.device)[0]

    def initial_bounds(self, model: nn.Module, x, sites: list[str]) -> dict:
        if self.warm_start and self.bounds is not None and list(self.bounds) == sites:
            return self.bounds
        data_max = max_activations(model, x, sites, self.granularity)
        if self.init == "constant":
            return {s: v.new_full(v.shape, self.init_value) for s, v in data_max.items()}
        return data_max

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        x = self.fit_data(ctx)
        sites = resolve_sites(model, self.sites)
        bounded = BoundedModel(model, self.initial_bounds(model, x, sites))
        self.log = fit_bounds(bounded, x, self.epochs, self.lr, self.c if self.warm_start else self.c0, self.growth,
                              self.target_agreement, self.adapt_every, self.adapt_after, self.batch_size,
                              ctx.generator, trim=self.trim, penalty=self.penalty)
        self.c = self.log["c_final"]
        self.bounds = bounded.bound_dict()
        return bounded
