"""Robust aggregation rules for the baseline defenses of docs/paper.md, as pure functions.

Every rule has the signature ``(updates (K, P), weights (K,), **hp) -> (P,)``: ``updates`` are the client deltas
Δ_i = θ_i − G_t, ``weights`` the clients' sample counts (normalised inside; rules that the original papers define
unweighted ignore them and say so). Inputs are never modified; the result has the dtype and device of ``updates``.
The detection-style rules (Krum, Multi-Krum, FLAME, FoolsGold) also expose a ``*_select`` / ``*_weights`` function
that reports which clients were accepted; the plain rule calls it, so the logic lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AGGREGATORS",
    "dp",
    "fedavg",
    "flame",
    "flame_select",
    "foolsgold",
    "foolsgold_weights",
    "krum",
    "krum_scores",
    "krum_select",
    "median",
    "multi_krum",
    "multi_krum_select",
    "norm_clip",
    "trimmed_mean",
]


# ----------------------------------------------------------------------------------------------------------- helpers
def _check(updates: Tensor, weights: Tensor | None = None) -> None:
    if updates.dim() != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty (K, P) tensor, got shape {tuple(updates.shape)}")
    if weights is not None and weights.shape != (updates.shape[0],):
        raise ValueError(f"weights must have shape ({updates.shape[0]},), got {tuple(weights.shape)}")


def finite_rows(updates: Tensor) -> Tensor:
    """(K,) bool: which updates hold only finite numbers (a NaN or inf update is an outlier for every robust rule)."""
    return torch.isfinite(updates).all(dim=1)


def _finite_only(updates: Tensor) -> Tensor:
    """The finite rows of ``updates`` (all rows when none is finite: the result is then non-finite, as it must be)."""
    ok = finite_rows(updates)
    return updates[ok] if bool(ok.any()) else updates


def _normalised(weights: Tensor, like: Tensor) -> Tensor:
    w = weights.to(device=like.device, dtype=like.dtype)
    total = w.sum()
    if not torch.isfinite(total) or total <= 0 or bool((w < 0).any()):
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights.tolist()}")
    return w / total


def _weighted_mean(updates: Tensor, weights: Tensor) -> Tensor:
    return _normalised(weights, updates) @ updates


def _median0(x: Tensor) -> Tensor:
    """Median along dim 0, averaging the two middle values when the count is even (numpy convention; torch.median
    would return the lower one)."""
    k = x.shape[0]
    s = x.sort(dim=0).values
    if k % 2:
        return s[k // 2]
    return (s[k // 2 - 1] + s[k // 2]) / 2


def _clip(updates: Tensor, bound: Tensor | float, norms: Tensor | None = None) -> Tensor:
    """Δ_i · min(1, bound/‖Δ_i‖₂) (a zero update stays zero); returns a new tensor."""
    if norms is None:
        norms = torch.linalg.vector_norm(updates, dim=1)
    scale = (torch.as_tensor(bound, dtype=norms.dtype, device=norms.device) / norms.clamp_min(1e-12)).clamp(max=1.0)
    return updates * scale.unsqueeze(1)


def _gaussian(n: int, std: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, std²I) of length n, drawn on the generator's device (so a CPU generator works for CUDA updates)."""
    dev = generator.device if generator is not None else like.device
    return (torch.randn(n, generator=generator, device=dev, dtype=like.dtype) * std).to(like.device)


def _pairwise_dists(x: Tensor) -> Tensor:
    """Euclidean distances (K, K) computed from coordinate differences (not the ‖a‖²+‖b‖²−2ab expansion, which
    cancels badly in float32 when the rows are close), so near-identical updates get accurate distances."""
    return torch.cdist(x.unsqueeze(0), x.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist")[0]


# -------------------------------------------------------------------------------------------------------- the rules
def fedavg(updates: Tensor, weights: Tensor) -> Tensor:
    """FedAvg (McMahan et al., AISTATS 2017): the sample-weighted mean Σ_i (n_i/Σn) Δ_i. No hyper-parameters; this is
    the "Vanilla" aggregation of FRJ-AJ (whose code averages unweighted — pass equal weights for that)."""
    _check(updates, weights)
    return _weighted_mean(updates, weights)


def norm_clip(updates: Tensor, weights: Tensor, max_norm: float | None = None, ratio: float = 0.9) -> Tensor:
    """NormThr (Sun et al. 2019, "Can you really backdoor federated learning?"): clip every update to L2 norm at most
    M, Δ_i ← Δ_i·min(1, M/‖Δ_i‖₂), then take the sample-weighted mean. M = ``max_norm`` when given, otherwise
    ``ratio`` × the median (even K: mean of the two middle values) of this round's update norms — the FRJ-AJ option
    ``--norm_bound_ratio 0.9`` whose reference statistic is unpublished, so the median is our choice (docs/paper.md)."""
    _check(updates, weights)
    norms = torch.linalg.vector_norm(updates, dim=1)
    bound = max_norm if max_norm is not None else ratio * _median0(norms)
    return _weighted_mean(_clip(updates, bound, norms), weights)


def dp(
    updates: Tensor,
    weights: Tensor,
    max_norm: float | None = None,
    ratio: float = 0.9,
    sigma: float = 1e-3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Weak differential privacy (Sun et al. 2019; Geyer et al. 2017): clip and average exactly as :func:`norm_clip`,
    then add isotropic Gaussian noise N(0, σ²I) to the aggregate (equivalently to the new global model), drawn with
    ``generator``. σ = 1e-3 is the FRJ-AJ default ``--DP_stddev``; it is an absolute std, not Geyer's σ·S/m scaling.
    With σ = 0 no noise is drawn and the result equals :func:`norm_clip`."""
    agg = norm_clip(updates, weights, max_norm=max_norm, ratio=ratio)
    if sigma == 0:
        return agg
    return agg + _gaussian(agg.shape[0], sigma, agg, generator)


def krum_scores(updates: Tensor, num_malicious: int = 1) -> Tensor:
    """Krum scores (K,): for each update the sum of squared distances to its K − f − 2 nearest other updates.
    A non-finite update scores +inf and is nobody's neighbour before every finite one is, so it is never selected
    while a finite update exists. Raises ValueError unless K > 2f + 2 (Blanchard et al. 2017's requirement)."""
    _check(updates)
    k, f = updates.shape[0], int(num_malicious)
    if f < 0:
        raise ValueError(f"num_malicious must be >= 0, got {f}")
    if k <= 2 * f + 2:
        raise ValueError(f"Krum needs K > 2f + 2 clients: got K={k} with f={f} (need K >= {2 * f + 3})")
    ok = finite_rows(updates)
    d2 = _pairwise_dists(torch.where(ok[:, None], updates, torch.zeros_like(updates))).double().square()
    big = torch.finfo(torch.float64).max / (4 * k)  # larger than any finite distance sum, still finite when summed
    d2 = torch.where(ok[:, None] & ok[None, :], d2.clamp(max=big), torch.full_like(d2, big))
    d2.fill_diagonal_(float("inf"))  # a fresh tensor: exclude self from the nearest neighbours
    nearest = d2.topk(k - f - 2, dim=1, largest=False).values
    return torch.where(ok, nearest.sum(dim=1), torch.full_like(nearest[:, 0], float("inf")))


def krum_select(updates: Tensor, weights: Tensor, num_malicious: int = 1) -> tuple[Tensor, np.ndarray]:
    """:func:`krum` that also returns the accepted row index as a length-1 int array."""
    _check(updates, weights)
    best = int(torch.argmin(krum_scores(updates, num_malicious)))
    return updates[best].clone(), np.array([best])


def krum(updates: Tensor, weights: Tensor, num_malicious: int = 1) -> Tensor:
    """Krum (Blanchard et al., NeurIPS 2017): score(i) = Σ of squared Euclidean distances from Δ_i to its K − f − 2
    nearest other updates; return the single update with the lowest score (weights ignored, as in the paper; ties →
    lowest index). Default f = 1 (FRJ-AJ ``--Krum_atker 1``). Raises ValueError when K ≤ 2f + 2."""
    return krum_select(updates, weights, num_malicious)[0]


def multi_krum_select(
    updates: Tensor, weights: Tensor, num_malicious: int = 1, num_selected: int | None = None
) -> tuple[Tensor, np.ndarray]:
    """:func:`multi_krum` that also returns the accepted row indices (sorted ascending)."""
    _check(updates, weights)
    scores = krum_scores(updates, num_malicious)
    k = updates.shape[0]
    m = k - int(num_malicious) if num_selected is None else int(num_selected)
    if not 1 <= m <= k:
        raise ValueError(f"num_selected must be in [1, K={k}], got {m}")
    m = min(m, max(1, int(torch.isfinite(scores).sum())))  # never select a non-finite update while finite ones remain
    idx = torch.sort(torch.argsort(scores, stable=True)[:m]).values.to(updates.device)
    return _weighted_mean(updates[idx], weights.to(updates.device)[idx]), idx.cpu().numpy()


def multi_krum(updates: Tensor, weights: Tensor, num_malicious: int = 1, num_selected: int | None = None) -> Tensor:
    """Multi-Krum (El Mhamdi et al., ICML 2018; Blanchard et al. 2017): compute Krum scores with f = ``num_malicious``
    (default 1) and return the sample-weighted mean of the m = ``num_selected`` lowest-score updates (default
    m = K − f, docs/paper.md). Raises ValueError when K ≤ 2f + 2."""
    return multi_krum_select(updates, weights, num_malicious, num_selected)[0]


def median(updates: Tensor, weights: Tensor) -> Tensor:
    """Coordinate-wise median (Yin et al., ICML 2018, "Byzantine-robust distributed learning"): the per-coordinate
    median of the K updates; for even K the mean of the two middle values. Unweighted, as in the paper; no
    hyper-parameters. Non-finite updates are left out."""
    _check(updates, weights)
    return _median0(_finite_only(updates))


def trimmed_mean(updates: Tensor, weights: Tensor, beta: float = 0.1) -> Tensor:
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018): per coordinate drop the b = ⌊βK⌋ largest and the b
    smallest values and average the remaining K − 2b (unweighted, as in the paper). β should be ≥ f/K for f attackers;
    default β = 0.1 (docs/paper.md, [R]). Raises ValueError when nothing remains (K − 2b ≤ 0) or β ∉ [0, 0.5]."""
    _check(updates, weights)
    updates = _finite_only(updates)  # a non-finite update is left out before trimming
    k = updates.shape[0]
    if not 0 <= beta <= 0.5:
        raise ValueError(f"beta must be in [0, 0.5], got {beta}")
    b = int(np.floor(beta * k + 1e-9))
    if k - 2 * b <= 0:
        raise ValueError(f"trimmed_mean with beta={beta} drops 2*{b} of K={k} values per coordinate: nothing remains")
    if b == 0:
        return updates.mean(dim=0)
    return updates.sort(dim=0).values[b : k - b].mean(dim=0)


def flame_select(
    updates: Tensor,
    weights: Tensor,
    global_params: Tensor,
    noise_lambda: float = 0.001,
    generator: torch.Generator | None = None,
    cluster_coords: Tensor | slice | None = None,
) -> tuple[Tensor, np.ndarray]:
    """:func:`flame` that also returns the admitted row indices (sorted ascending)."""
    from sklearn.cluster import HDBSCAN

    _check(updates, weights)
    if global_params.shape != (updates.shape[1],):
        raise ValueError(f"global_params must have shape ({updates.shape[1]},), got {tuple(global_params.shape)}")
    k = updates.shape[0]
    # 1. cluster the local models θ_i = G_t + Δ_i by cosine distance; keep the majority cluster
    if k < 2:
        accepted = np.arange(k)
    else:
        theta = updates + global_params.to(updates.device, updates.dtype)
        if cluster_coords is not None:
            theta = theta[:, cluster_coords]
        unit = theta / torch.linalg.vector_norm(theta, dim=1, keepdim=True).clamp_min(1e-12)
        # 1 − cos(a, b) = ‖â − b̂‖²/2, from differences: accurate even when all models are nearly parallel
        dist = (_pairwise_dists(unit).double().square() / 2).clamp(0.0, 2.0).cpu().numpy()
        dist = (dist + dist.T) / 2
        np.fill_diagonal(dist, 0.0)
        labels = HDBSCAN(
            metric="precomputed", min_cluster_size=k // 2 + 1, min_samples=1, allow_single_cluster=True, copy=True
        ).fit_predict(dist)
        clustered = labels[labels >= 0]
        if clustered.size == 0:
            accepted = np.arange(k)
        else:
            majority = np.bincount(clustered).argmax()
            accepted = np.flatnonzero(labels == majority)
    # 2. adaptive clipping bound S_t = median of all K update norms; clip the admitted ones; plain mean
    norms = torch.linalg.vector_norm(updates, dim=1)
    s_t = _median0(norms)
    idx = torch.as_tensor(accepted, device=updates.device)
    agg = _clip(updates[idx], s_t, norms[idx]).mean(dim=0)
    # 3. adaptive noise N(0, (λ S_t)²)
    if noise_lambda != 0:
        agg = agg + _gaussian(agg.shape[0], noise_lambda * float(s_t), agg, generator)
    return agg, accepted


def flame(
    updates: Tensor,
    weights: Tensor,
    global_params: Tensor,
    noise_lambda: float = 0.001,
    generator: torch.Generator | None = None,
    cluster_coords: Tensor | slice | None = None,
) -> Tensor:
    """FLAME (Nguyen et al., USENIX Security 2022): following the paper, cluster the *local models*
    θ_i = ``global_params`` + Δ_i (not the deltas) with HDBSCAN on pairwise cosine distances (min_cluster_size
    K//2 + 1, min_samples 1, single cluster allowed) and admit the majority cluster (noise points rejected; if
    everything is noise all are admitted); S_t = median of ‖Δ_i‖₂ over all K clients; clip each admitted Δ_i by
    min(1, S_t/‖Δ_i‖₂); take their plain (unweighted) mean; add N(0, (λ·S_t)²I) noise, λ = 0.001 (3DFed's value).
    ``cluster_coords`` (index/mask/slice over P) restricts the clustering to some coordinates, e.g. the output layer
    as in 3DFed's "time-saving" version; the default uses the full model."""
    return flame_select(updates, weights, global_params, noise_lambda, generator, cluster_coords)[0]


def foolsgold_weights(history: Tensor, kappa: float = 1.0) -> Tensor:
    """FoolsGold per-client weights α (K,) in [0, 1] from the per-client update history (K, P') — P' may be a subset
    of the coordinates, e.g. the output layer as in 3DFed. MARS counts a client as accepted when α_i > 0.5.

    Follows the reference code (``DistributedML/FoolsGold``): cs without the diagonal; v_i = max(0, max_{j≠i} cs_ij)
    (the code's ``cs − I`` puts a 0 on the diagonal, so v is never negative — this avoids sign flips and division by
    zero in the pardoning); pardon cs_ij ← cs_ij·v_i/v_j where v_j > v_i; α_i = 1 − max_{j≠i} cs_ij clipped to
    [0, 1]; α ← α/max α (all zero → all zero); α = 1 → 0.99; α ← κ(ln(α/(1−α)) + 0.5) clipped to [0, 1], α = 0 → 0."""
    _check(history)
    k = history.shape[0]
    h = history.double()
    unit = h / torch.linalg.vector_norm(h, dim=1, keepdim=True).clamp_min(1e-300)  # zero rows → cos 0
    cs = (unit @ unit.T).clamp(-1.0, 1.0)
    off = ~torch.eye(k, dtype=torch.bool, device=cs.device)
    neg_inf = torch.tensor(float("-inf"), dtype=cs.dtype, device=cs.device)
    v = torch.where(off, cs, neg_inf).max(dim=1).values.clamp_min(0.0)  # K = 1: max over nothing → −inf → 0
    pardon = off & (v.unsqueeze(0) > v.unsqueeze(1))  # [i, j]: v_j > v_i (implies v_j > 0)
    cs = torch.where(pardon, cs * v.unsqueeze(1) / v.unsqueeze(0).clamp_min(1e-300), cs)
    alpha = (1.0 - torch.where(off, cs, neg_inf).max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if top <= 0:
        return torch.zeros(k, dtype=history.dtype, device=history.device)
    alpha = alpha / top
    alpha = torch.where(alpha == 1.0, torch.full_like(alpha, 0.99), alpha)
    pos = alpha > 0
    logit = kappa * (torch.log(alpha.clamp_min(1e-300) / (1.0 - alpha)) + 0.5)
    alpha = torch.where(pos, logit, torch.zeros_like(alpha)).clamp(0.0, 1.0)
    return alpha.to(history.dtype)


def foolsgold(updates: Tensor, weights: Tensor, history: Tensor, kappa: float = 1.0) -> Tensor:
    """FoolsGold (Fung et al., RAID 2020, "The limitations of federated learning in sybil settings"): down-weight
    clients whose update histories are too similar to each other (sybils). ``history`` (K, P') is the per-client sum
    of past updates *including this round* (the caller maintains it); α = :func:`foolsgold_weights` (κ = 1); the
    aggregate is Σ α_i Δ_i / Σ α_i (sample counts ignored, as in the paper; all α = 0 → zero update). The paper's
    optional feature-importance weighting of the output layer is not implemented."""
    _check(updates, weights)
    if history.shape[0] != updates.shape[0]:
        raise ValueError(f"history must have {updates.shape[0]} rows, got {history.shape[0]}")
    alpha = foolsgold_weights(history, kappa).to(updates.device, updates.dtype)
    total = alpha.sum()
    if total <= 0:
        return torch.zeros(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return (alpha @ updates) / total


AGGREGATORS: dict[str, Callable[..., Tensor]] = {
    "fedavg": fedavg,
    "norm_clip": norm_clip,
    "dp": dp,
    "krum": krum,
    "multi_krum": multi_krum,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "flame": flame,
    "foolsgold": foolsgold,
}
"""All rules by name; ``flame`` needs ``global_params=`` and ``foolsgold`` needs ``history=`` as keyword arguments."""
