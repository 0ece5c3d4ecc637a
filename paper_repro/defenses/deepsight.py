"""``deepsight`` — DeepSight (Rieger, Nguyen, Miettinen & Sadeghi, NDSS 2022), a step-3 defense against malicious
clients: it labels each update suspicious from how its output layer's energy is spread (a backdoored model
concentrates it on few labels), clusters the updates three ways, rejects every cluster holding a suspicious share
of at least ``tau``, clips the rest to the median update norm and averages them.

Faithful [C: Rieger et al. §V, Algorithm 1]: NEUPs (normalised energy of each output neuron's update, weights and
bias), threshold exceedings with ξ = max(0.01, 1/P) · the largest NEUP, suspicious when TE ≤ median TE / 2;
clusterings by HDBSCAN on the cosine distances of the output-bias updates, on the DDifs (per random-input seed, the
ratio of the local model's to the global model's softmax outputs; inputs uniform over the model's input domain) and
on the NEUPs, combined by co-membership with the three clusterings weighted equally (the DDif seeds averaged into one);
τ = 1/3; clipping to the median L2 norm. Adapted [R]: ``ddif_samples`` random inputs per seed (the paper uses
20,000); a noise point of HDBSCAN is its own cluster; when every cluster is rejected, no update is applied."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import HDBSCAN
from torch import nn

from .. import aggregators as agg
from ..params import Field, params
from .base import AggregateResult, Defense, RoundContext, local_models, without_nonfinite


def output_layer(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its output layer)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"deepsight needs a model with a fully connected output layer; {type(model).__name__} has none"
        )
    return linears[-1]


def neups(dw: torch.Tensor, db: torch.Tensor) -> np.ndarray:
    """(P,) normalised energies of the P output neurons' updates: e_p = Σ_j |Δw_pj| + |Δb_p|, NEUP_p = e_p² / Σ e²."""
    e = (dw.abs().sum(1) + db.abs()).double() ** 2
    return (e / e.sum()).numpy() if e.sum() > 0 else np.full(len(e), 1 / len(e))


def threshold_exceedings(neup: np.ndarray) -> int:
    """How many NEUPs exceed ξ = max(0.01, 1/P) · max NEUP."""
    return int((neup > max(0.01, 1 / len(neup)) * neup.max()).sum())


def clusters(features: np.ndarray | None = None, dist: np.ndarray | None = None) -> np.ndarray:
    """HDBSCAN labels (min cluster size 2) of rows of ``features`` (Euclidean) or of a precomputed ``dist``; noise
    points get labels of their own."""
    n = len(features if dist is None else dist)
    if n < 3:
        return np.zeros(n, dtype=int)
    kw = {"min_cluster_size": 2, "min_samples": 1, "allow_single_cluster": True, "copy": True}
    labels = (
        HDBSCAN(**kw).fit_predict(features) if dist is None else HDBSCAN(metric="precomputed", **kw).fit_predict(dist)
    )
    noise = labels < 0
    labels[noise] = labels.max() + 1 + np.arange(noise.sum())
    return labels


def co_membership(labelings: list[np.ndarray]) -> np.ndarray:
    """(K, K) distance: the share of clusterings that put two clients in different clusters."""
    return np.mean([lab[:, None] != lab[None, :] for lab in labelings], axis=0).astype(float)


def ensemble_distance(cosine: np.ndarray, ddifs: list[np.ndarray], neup: np.ndarray) -> np.ndarray:
    """(K, K) distance of the three clusterings, each weighted 1/3: the cosine one, the DDif one (its seeds'
    co-membership averaged into one) and the NEUP one, as DeepSight merges them."""
    return (co_membership([cosine]) + co_membership(ddifs) + co_membership([neup])) / 3


class DeepSight(Defense):
    """Reject clusters with a large share of updates whose output energy is concentrated; clip and average the rest."""

    name = "deepsight"
    min_clients = 3

    @params
    class Params:
        tau: float = Field(1 / 3, gt=0, le=1, description="a cluster is rejected when its suspicious share ≥ tau")
        seeds: int = Field(3, ge=1, le=10, description="random-input seeds of the DDif clusterings")
        ddif_samples: int = Field(200, ge=1, description="random inputs per DDif seed")

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        g_out = output_layer(ctx.global_model)
        shape = ctx.synthetic.x.shape[1:]
        # uniform over the model's input domain [−1, 1] (images are normalised to it, data.to_float)
        inputs = [2 * torch.rand((self.ddif_samples, *shape), generator=ctx.generator) - 1 for _ in range(self.seeds)]
        p_global = [ctx.predict(ctx.global_model, ctx.as_input(x.to(ctx.device))).softmax(1) for x in inputs]
        neup, bias, ddifs = [], [], [[] for _ in inputs]
        for model in local_models(ctx, updates):
            out = output_layer(model)
            dw, db = (out.weight - g_out.weight).detach().cpu(), (out.bias - g_out.bias).detach().cpu()
            neup.append(neups(dw, db))
            bias.append(db.double().numpy())
            for d, x, pg in zip(ddifs, inputs, p_global):
                p = ctx.predict(model, ctx.as_input(x.to(ctx.device))).softmax(1)
                d.append((p / pg.clamp_min(1e-12)).mean(0).double().cpu().numpy())
        neup, bias = np.array(neup), np.array(bias)
        te = np.array([threshold_exceedings(n) for n in neup])
        suspicious = te <= np.median(te) / 2
        unit = bias / np.maximum(np.linalg.norm(bias, axis=1, keepdims=True), 1e-12)
        cosine = np.clip(1 - unit @ unit.T, 0, 2)
        np.fill_diagonal(cosine, 0)
        final = clusters(
            dist=ensemble_distance(clusters(dist=cosine), [clusters(np.array(d)) for d in ddifs], clusters(neup))
        )
        accept = np.zeros(len(updates), dtype=bool)
        for c in np.unique(final):
            members = final == c
            accept[members] = suspicious[members].mean() < self.tau
        flagged = [int(k) for k, a in zip(ctx.client_ids, accept) if not a]
        info = {"suspicious": int(suspicious.sum())}
        if not accept.any():
            return AggregateResult(torch.zeros_like(updates[0]), flagged, info)
        norms = torch.linalg.vector_norm(updates, dim=1)
        bound = norms.median()
        keep = torch.as_tensor(np.flatnonzero(accept), device=updates.device)
        clipped = updates[keep] * (bound / norms[keep].clamp_min(1e-12)).clamp(max=1.0)[:, None]
        return AggregateResult(agg.fedavg(clipped, weights[keep]), flagged, info)
