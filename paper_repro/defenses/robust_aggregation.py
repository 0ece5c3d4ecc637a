"""Step-3 defenses that replace FedAvg by a robust aggregator from ``paper_repro.aggregators`` (PAPER.md §5).

NormThr (Sun et al. 2019), weak DP (Sun et al. 2019; Geyer et al. 2017), Krum / Multi-Krum (Blanchard et al. 2017),
coordinate-wise median and trimmed mean (Yin et al. 2018). Selection-based rules report the rejected clients.
"""
from __future__ import annotations

import torch

from .. import aggregators as agg
from ..models import flat_state
from .base import AggregateResult, Defense, RoundContext


class NormClip(Defense):
    """NormThr: clip each update to M (``max_norm``, or ``ratio`` × median norm), then FedAvg. [C: FRJ-AJ 0.9]"""

    name = "norm_clip"

    def __init__(self, max_norm: float | None = None, ratio: float = 0.9):
        self.max_norm, self.ratio = max_norm, ratio

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.norm_clip(updates, weights, max_norm=self.max_norm, ratio=self.ratio))


class DP(Defense):
    """Weak DP: NormThr clipping, then N(0, σ²I) added to the aggregate. [C: FRJ-AJ DP_stddev 1e-3]"""

    name = "dp"

    def __init__(self, max_norm: float | None = None, ratio: float = 0.9, sigma: float = 1e-3):
        self.max_norm, self.ratio, self.sigma = max_norm, ratio, sigma

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.dp(updates, weights, self.max_norm, self.ratio, self.sigma, ctx.generator))


def _flagged(ctx: RoundContext, accepted) -> list[int]:
    acc = {int(i) for i in accepted}
    return [int(k) for i, k in enumerate(ctx.client_ids) if i not in acc]


class Krum(Defense):
    """Krum: keep the single update with the smallest sum of squared distances to its K − f − 2 nearest
    neighbours. [C: FRJ-AJ Krum_atker 1]"""

    name = "krum"

    def __init__(self, num_malicious: int = 1):
        self.num_malicious = num_malicious

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        u, accepted = agg.krum_select(updates, weights, self.num_malicious)
        return AggregateResult(u, _flagged(ctx, accepted))


class MultiKrum(Defense):
    """Multi-Krum: FedAvg of the ``num_selected`` (default K − f) lowest Krum scores."""

    name = "multi_krum"

    def __init__(self, num_malicious: int = 1, num_selected: int | None = None):
        self.num_malicious, self.num_selected = num_malicious, num_selected

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        u, accepted = agg.multi_krum_select(updates, weights, self.num_malicious, self.num_selected)
        return AggregateResult(u, _flagged(ctx, accepted))


class Median(Defense):
    """Coordinate-wise median."""

    name = "median"

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.median(updates, weights))


class TrimmedMean(Defense):
    """Coordinate-wise trimmed mean, dropping the ⌊βK⌋ largest and smallest values. [R: β = 0.1]"""

    name = "trimmed_mean"

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.trimmed_mean(updates, weights, self.beta))


class Flame(Defense):
    """FLAME: HDBSCAN on cosine distances of local models, adaptive clipping to the median norm, Gaussian noise
    λ·S_t. [C: Nguyen et al. 2022; λ = 0.001 from 3DFed's implementation] Full model, not only the output layer."""

    name = "flame"

    def __init__(self, noise_lambda: float = 0.001):
        self.noise_lambda = noise_lambda

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        g = flat_state(ctx.global_model)
        u, accepted = agg.flame_select(updates, weights, g, self.noise_lambda, ctx.generator)
        return AggregateResult(u, _flagged(ctx, accepted))


class FoolsGold(Defense):
    """FoolsGold: down-weight clients whose summed update history is too similar to another's (sybils).
    [C: Fung et al. 2020, κ = 1] A client counts as flagged when its weight is ≤ 0.5 (MARS's convention)."""

    name = "foolsgold"

    def __init__(self, kappa: float = 1.0):
        self.kappa = kappa
        self.history: dict[int, torch.Tensor] = {}
        self.last: dict = {}

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        for i, k in enumerate(ctx.client_ids):
            self.history[int(k)] = self.history.get(int(k), torch.zeros_like(updates[i])) + updates[i]
        hist = torch.stack([self.history[int(k)] for k in ctx.client_ids])
        alpha = agg.foolsgold_weights(hist, self.kappa)
        update = agg.foolsgold(updates, weights, hist, self.kappa)
        accepted = [i for i, a in enumerate(alpha.tolist()) if a > 0.5]
        self.last = {"weights": alpha.tolist()}  # this round's FoolsGold weights, to inspect
        return AggregateResult(update, _flagged(ctx, accepted))
