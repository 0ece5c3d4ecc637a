"""``mars`` — MARS (Wan et al., NeurIPS 2025, arXiv 2509.20383): data-free detection of backdoored local models
from their *backdoor energy* (docs/paper.md), following the paper where the public code deviates.

1. Backdoor energy (BE) per output channel of every conv layer = the channel's Lipschitz constant: the spectral
   norm of its weight reshaped to (C_in, kH·kW), times |γ/σ| of the BatchNorm that follows, if any [C: paper App. C;
   code]. Fully connected layers are skipped [C: App. J].
2. Concentrated BE (CBE): per layer the top ``kappa`` % values (at least one), concatenated [C: paper, κ = 5].
3. Two clusters by 2-means in the 1-D Wasserstein (W1) geometry: a CBE is an empirical distribution; W1 between
   equal-size ones is the mean |difference of the sorted vectors| (scipy's ``wasserstein_distance``), and a centre
   is the element-wise mean of its members' sorted CBEs [C: paper; the code instead runs KMeans on rows of the
   distance matrix — not followed].
4. If W1(centre₁, centre₂) ≤ ``epsilon`` (0.03) accept everyone; else reject the cluster whose centre has the larger
   L1 norm (``keep="low_energy"``, MARS) or the minority cluster (``keep="majority"``, MARS*) [C].
5. FedAvg of the accepted updates (paper: mean of accepted models; the code's shrunken step is not followed).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from .. import aggregators as agg
from ..params import Field, params
from .base import AggregateResult, Defense, RoundContext, local_models, without_nonfinite


@torch.no_grad()
def backdoor_energy(model: nn.Module) -> list[np.ndarray]:
    """Per conv layer, BE of each output channel: σ_max(W_c as (C_in, kH·kW)) · |γ_c/√(var_c + eps)| (BN if it
    directly follows the conv in module order)."""
    mods = list(model.modules())
    out = []
    for i, m in enumerate(mods):
        if not isinstance(m, nn.Conv2d):
            continue
        w = m.weight.detach().float()  # (C_out, C_in, kH, kW)
        be = torch.linalg.matrix_norm(w.reshape(w.shape[0], w.shape[1], -1), ord=2)  # (C_out,)
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(nxt, nn.BatchNorm2d) and nxt.running_var is not None:
            var = torch.nan_to_num(nxt.running_var.float(), nan=0.0).clamp_min(0)
            gamma = nxt.weight.float() if nxt.weight is not None else torch.ones_like(var)
            be = be * (gamma / torch.sqrt(var + nxt.eps)).abs()
        out.append(be.numpy())
    if not out:
        raise ValueError(f"MARS needs conv layers; {type(model).__name__} has none")
    return out


def concentrated_energy(layers: list[np.ndarray], kappa: float = 5.0) -> np.ndarray:
    """Top ``kappa`` % BE values of every layer (at least one per layer), concatenated and sorted."""
    parts = [np.sort(be)[::-1][: max(1, int(np.ceil(len(be) * kappa / 100)))] for be in layers]
    return np.sort(np.concatenate(parts))


def w1(a: np.ndarray, b: np.ndarray) -> float:
    return float(wasserstein_distance(a, b))


def two_means_w1(cbes: np.ndarray, iters: int = 50) -> np.ndarray:
    """Labels (0/1) of 2-means under W1 for equal-size 1-D distributions (rows of ``cbes``, sorted)."""
    k = len(cbes)
    if k < 2:
        return np.zeros(k, int)
    d = np.array([[w1(a, b) for b in cbes] for a in cbes])
    i, j = np.unravel_index(np.argmax(d), d.shape)  # deterministic init: the farthest pair
    centres = cbes[[i, j]].astype(float)
    labels = np.zeros(k, int)
    for _ in range(iters):
        new = np.array([int(w1(c, centres[1]) < w1(c, centres[0])) for c in cbes])
        if (new == labels).all() and _ > 0:
            break
        labels = new
        for c in (0, 1):
            if (labels == c).any():
                centres[c] = cbes[labels == c].mean(0)
    return labels


class MARS(Defense):
    """Split the round's local models into two clusters of concentrated backdoor energy and keep one (steps 1–5 of
    the module docstring); ``kappa`` % per layer, ``epsilon`` the W1 distance below which everyone is accepted,
    ``keep`` which cluster survives. [C: MARS paper]"""

    name = "mars"

    @params
    class Params:
        kappa: float = Field(5.0, gt=0, description="per cent of each layer's neurons that carry backdoor energy")
        epsilon: float = Field(0.03, ge=0, description="W1 distance of the two clusters below which all are kept")
        keep: Literal["low_energy", "majority"] = Field(
            "low_energy", description="the cluster kept: low_energy (MARS) or majority (MARS*)"
        )

    def __init__(self, **params):
        super().__init__(**params)
        self.last: dict = {}

    def select(self, cbes: np.ndarray) -> np.ndarray:
        """Indices of accepted rows."""
        labels = two_means_w1(cbes)
        self.last = {"centre_distance": 0.0}
        if len(set(labels)) < 2:
            return np.arange(len(cbes))
        centres = [cbes[labels == c].mean(0) for c in (0, 1)]
        self.last = {"centre_distance": w1(*centres)}
        if self.last["centre_distance"] <= self.epsilon:
            return np.arange(len(cbes))
        if self.keep == "majority":
            good = int((labels == 1).sum() > (labels == 0).sum())
        else:
            good = int(np.abs(centres[1]).sum() < np.abs(centres[0]).sum())
        return np.flatnonzero(labels == good)

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        cbes = np.stack([concentrated_energy(backdoor_energy(m), self.kappa) for m in local_models(ctx, updates)])
        accepted = self.select(cbes)
        flagged = [int(k) for i, k in enumerate(ctx.client_ids) if i not in set(accepted.tolist())]
        return AggregateResult(agg.fedavg(updates[accepted], weights[accepted]), flagged, dict(self.last))
