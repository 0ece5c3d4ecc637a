"""Detection defenses known only from their abstracts; **reconstructions, not the published algorithms**
(docs/paper.md). Both reject the flagged clients' updates (FedAvg of the rest) and report them.

- ``geminiguard`` (Lyu et al., arXiv 2503.23288, "Two Heads Are Better than One"): a model-weight analysis combined
  with a latent-space analysis. [R] weight score = cosine distance of Δ_i to the coordinate-wise median update;
  latent score = distance of the local model's mean penultimate embedding of the synthetic set to the median
  embedding; each turned into a robust z-score (median/MAD); flag if their mean exceeds ``threshold``.
- ``weidetect`` (Sameera K. M. et al., arXiv 2504.04367): [R] score = accuracy of each local model on the server's
  validation set (here the synthetic set, possibly poisoned); fit a Weibull distribution to the scores (MLE,
  scipy) and flag clients whose CDF value is below ``alpha``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch import nn

from .. import aggregators as agg
from ..activation_bounds import record_activations, relu_sites
from ..params import Field, params
from .base import AggregateResult, Defense, RoundContext, local_models, without_nonfinite


def robust_z(v: np.ndarray) -> np.ndarray:
    """(v − median)/(1.4826·MAD); zeros when MAD is 0."""
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    return (v - med) / mad if mad > 0 else np.zeros_like(v)


def _result(updates, weights, ctx: RoundContext, flag: np.ndarray) -> AggregateResult:
    """FedAvg of the clients not flagged. A round that flags everyone leaves nobody out (there would be nothing to
    aggregate): it reports nobody as flagged, since nobody was, rather than a detection that did not happen."""
    if flag.all():
        flag = np.zeros_like(flag)
    keep = np.flatnonzero(~flag)
    flagged = [int(k) for k, f in zip(ctx.client_ids, flag) if f]
    return AggregateResult(agg.fedavg(updates[keep], weights[keep]), flagged)


def penultimate_embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean activation of the last ReLU over ``x`` (D,)."""
    site = relu_sites(model)[-1]
    return record_activations(model, x, [site], lambda a: a.flatten(1))[site].mean(0)


class GeminiGuard(Defense):
    """Flag clients whose weight score and latent score (robust z-scores, see the module docstring) average above
    ``threshold``; the latent score uses ``per_class`` synthetic images of every label. [R]"""

    name = "geminiguard"
    min_clients = 3

    @params
    class Params:
        threshold: float = Field(2.5, ge=0, description="flag above this mean of the two robust z-scores")
        per_class: int = Field(20, ge=1, description="synthetic images per label for the latent score")

    def __init__(self, **params):
        super().__init__(**params)
        self.last: dict = {}

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        med = updates.median(0).values
        cos = torch.nn.functional.cosine_similarity(updates, med[None], dim=1)
        w_score = robust_z((1 - cos).numpy())
        idx = np.concatenate(
            [np.flatnonzero(ctx.synthetic.y == c)[: self.per_class] for c in range(ctx.synthetic.num_classes)]
        )
        x = ctx.synthetic.subset(idx).tensors(ctx.device)[0]
        emb = torch.stack([penultimate_embedding(m, x) for m in local_models(ctx, updates)])
        l_score = robust_z((emb - emb.median(0).values).norm(dim=1).numpy())
        score = (w_score + l_score) / 2
        self.last = {"weight_z": w_score.tolist(), "latent_z": l_score.tolist()}  # this round's scores, to inspect
        return _result(updates, weights, ctx, score > self.threshold)


class WeiDetect(Defense):
    """Flag clients whose accuracy on the synthetic set lies in the lower ``alpha`` tail of a Weibull distribution
    fitted to all sampled clients' accuracies (nobody is flagged with fewer than three clients or equal scores). [R]"""

    name = "weidetect"
    min_clients = 3

    @params
    class Params:
        alpha: float = Field(
            0.05, gt=0, lt=1, description="lower tail of the fitted Weibull distribution that is flagged"
        )

    def __init__(self, **params):
        super().__init__(**params)
        self.last: dict = {}

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        x, y = ctx.synthetic.tensors(ctx.device)
        scores = np.array(
            [(ctx.predict(m, x).argmax(1) == y).float().mean().item() for m in local_models(ctx, updates)]
        )
        if len(scores) < 3 or np.ptp(scores) == 0:
            self.last = {"scores": scores.tolist()}
            return _result(updates, weights, ctx, np.zeros(len(scores), bool))
        c, loc, scale = stats.weibull_min.fit(np.clip(scores, 1e-6, None), floc=0)
        cdf = stats.weibull_min.cdf(scores, c, loc, scale)
        self.last = {"scores": scores.tolist(), "cdf": cdf.tolist()}  # this round's scores, to inspect
        return _result(updates, weights, ctx, cdf < self.alpha)
