"""Step-3 defenses that replace FedAvg by a robust aggregator from ``paper_repro.aggregators`` (docs/paper.md).

NormThr (Sun et al. 2019), weak DP (Sun et al. 2019; Geyer et al. 2017), Krum / Multi-Krum (Blanchard et al. 2017),
coordinate-wise median and trimmed mean (Yin et al. 2018). Selection-based rules report the rejected clients.
"""

from __future__ import annotations

import torch

from .. import aggregators as agg
from ..models import flat_state
from ..params import Field, params
from .base import AggregateResult, Defense, RoundContext, without_nonfinite


class NormClip(Defense):
    """NormThr: clip each update to M (``max_norm``, or ``ratio`` × median norm), then FedAvg. [C: FRJ-AJ 0.9]"""

    name = "norm_clip"

    @params
    class Params:
        max_norm: float | None = Field(None, gt=0, description="clip bound M; None: ratio × the median update norm")
        ratio: float = Field(0.9, gt=0, description="M = ratio × the round's median update norm (max_norm None)")

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.norm_clip(updates, weights, max_norm=self.max_norm, ratio=self.ratio))


class DP(Defense):
    """Weak DP: NormThr clipping, then N(0, σ²I) added to the aggregate. [C: FRJ-AJ DP_stddev 1e-3]"""

    name = "dp"

    @params
    class Params(NormClip.Params):
        sigma: float = Field(
            1e-3, gt=0, description="standard deviation of the Gaussian noise on the aggregate (0 would be norm_clip)"
        )

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.dp(updates, weights, self.max_norm, self.ratio, self.sigma, ctx.generator))


def largest_f(k: int) -> int:
    """The largest number of malicious clients Krum can assume among ``k`` updates (k > 2f + 2)."""
    return max(0, (k - 3) // 2)


def _assumed_f(num_malicious: int | None, updates) -> int:
    """The f Krum assumes this round: the configured one, or the largest ``len(updates)`` allows."""
    return largest_f(len(updates)) if num_malicious is None else num_malicious


def _check_krum(num_malicious: int | None, cfg) -> None:
    k = cfg.fl.clients_per_round
    if num_malicious is None:
        return
    if not isinstance(num_malicious, int) or num_malicious < 0:
        raise ValueError(f"num_malicious={num_malicious!r} must be an integer >= 0")
    if k <= 2 * num_malicious + 2:
        raise ValueError(
            f"Krum with num_malicious={num_malicious} needs more than {2 * num_malicious + 2} clients per "
            f"round; fl.clients_per_round={k}. Lower num_malicious or raise fl.clients_per_round."
        )


def _flagged(ctx: RoundContext, accepted) -> list[int]:
    acc = {int(i) for i in accepted}
    return [int(k) for i, k in enumerate(ctx.client_ids) if i not in acc]


class Krum(Defense):
    """Krum: keep the single update with the smallest sum of squared distances to its K − f − 2 nearest
    neighbours (a non-finite update scores +inf: never kept while a finite one exists). ``num_malicious`` f: None
    (default) assumes the largest f the round size allows, ⌊(K − 3)/2⌋ (1 for K = 5, 3 for K = 10), the strongest
    fair setting when the real number of attackers is larger. [C: Blanchard et al. 2017; FRJ-AJ fixes f = 1]"""

    name = "krum"

    @params
    class Params:
        num_malicious: int | None = Field(None, ge=1, description="f; None: the largest the round size allows")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        _check_krum(self.num_malicious, cfg)

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        u, accepted = agg.krum_select(updates, weights, _assumed_f(self.num_malicious, updates))
        return AggregateResult(u, _flagged(ctx, accepted))


class MultiKrum(Defense):
    """Multi-Krum: FedAvg of the ``num_selected`` (default K − f) lowest Krum scores; f as in :class:`Krum`."""

    name = "multi_krum"

    @params
    class Params(Krum.Params):
        num_selected: int | None = Field(None, ge=1, description="updates averaged; None: K − f")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        _check_krum(self.num_malicious, cfg)
        k = cfg.fl.clients_per_round
        if self.num_selected is not None and self.num_selected >= k:
            raise ValueError(
                f"multi_krum num_selected={self.num_selected} with fl.clients_per_round={k}: averaging every update "
                "is FedAvg, not a defense; choose fewer than the clients per round (or None: K − f)"
            )

    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        u, accepted = agg.multi_krum_select(
            updates, weights, _assumed_f(self.num_malicious, updates), self.num_selected
        )
        return AggregateResult(u, _flagged(ctx, accepted))


class Median(Defense):
    """Coordinate-wise median."""

    name = "median"
    min_clients = 3

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.median(updates, weights))


class TrimmedMean(Defense):
    """Coordinate-wise trimmed mean, dropping the ⌊βK⌋ largest and smallest values. β = 0.2 by default: Yin et al.
    (2018) need β at least the share of malicious clients, 4 of 20 in the quick classic attack, and with K = 5 updates
    per round it is the smallest β that trims anything (⌊0.2·5⌋ = 1 per end; β = 0.1 trimmed nothing). [R]"""

    name = "trimmed_mean"

    @params
    class Params:
        beta: float = Field(0.2, gt=0, lt=0.5, description="share of the values trimmed at each end")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        k = cfg.fl.clients_per_round
        if int(self.beta * k + 1e-9) < 1:
            raise ValueError(
                f"trimmed_mean beta={self.beta} with fl.clients_per_round={k} trims ⌊βK⌋ = 0 values per end: it "
                f"would be FedAvg; set beta ≥ {1 / k:.3g} (1/K) or raise the clients per round"
            )

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        return AggregateResult(agg.trimmed_mean(updates, weights, self.beta))


class Flame(Defense):
    """FLAME: HDBSCAN on cosine distances of local models, adaptive clipping to the median norm, Gaussian noise
    λ·S_t. [C: Nguyen et al. 2022; λ = 0.001 from 3DFed's implementation] Full model, not only the output layer."""

    name = "flame"
    min_clients = 3

    @params
    class Params:
        noise_lambda: float = Field(0.001, ge=0, description="noise level λ (σ = λ·S_t, S_t the clip bound)")

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        g = flat_state(ctx.global_model)
        u, accepted = agg.flame_select(updates, weights, g, self.noise_lambda, ctx.generator)
        return AggregateResult(u, _flagged(ctx, accepted))


class FoolsGold(Defense):
    """FoolsGold: down-weight clients whose summed update history is too similar to another's (sybils).
    [C: Fung et al. 2020, κ = 1] A client counts as flagged when its weight is ≤ 0.5 (MARS's convention)."""

    name = "foolsgold"

    @params
    class Params:
        kappa: float = Field(1.0, gt=0, description="confidence parameter κ of the logit weighting")

    def __init__(self, **params):
        super().__init__(**params)
        self.history: dict[int, torch.Tensor] = {}
        self.last: dict = {}

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        for i, k in enumerate(ctx.client_ids):
            self.history[int(k)] = self.history.get(int(k), torch.zeros_like(updates[i])) + updates[i]
        hist = torch.stack([self.history[int(k)] for k in ctx.client_ids])
        alpha = agg.foolsgold_weights(hist, self.kappa)
        update = agg.foolsgold(updates, weights, hist, self.kappa)
        accepted = [i for i, a in enumerate(alpha.tolist()) if a > 0.5]
        self.last = {"weights": alpha.tolist()}  # this round's FoolsGold weights, to inspect
        return AggregateResult(update, _flagged(ctx, accepted))
