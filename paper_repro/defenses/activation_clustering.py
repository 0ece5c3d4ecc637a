"""``activation_clustering`` — activation clustering on the server's synthetic set (Chen et al., SafeAI@AAAI 2019), a
data-side defense against a poisoned FM: before the rounds, per label, the step-0 model's penultimate features are
reduced with ICA to ``components`` dimensions and split by 2-means; the smaller cluster is removed when it is small
(``analysis="relative_size"``: its share of the label < ``size_threshold``), or small and clearly split
(``analysis="silhouette"``: also a silhouette score > ``silhouette_threshold``: a clear split into halves is two
kinds of clean images, not poison); the server then initialises again on what is left and fuses on it.

Faithful [C: Chen et al. §3–4]: last hidden layer, ICA to 10 dimensions, k-means with k = 2 per label, relative-size
and silhouette analyses (the thresholds of the IBM Adversarial Robustness Toolbox's implementation: 0.35 and 0.10).
Adapted [R]: the data are the server's synthetic set and the model is the server's step-0 model, trained on it; the
poisoned cluster is removed rather than relabelled (exclusionary reclassification needs retraining per cluster)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import FastICA
from sklearn.metrics import silhouette_score

from ..activation_bounds import check_sites
from ..data import ImageSet
from ..params import Field, params
from .base import Defense, ScreenContext
from .spectral import screen_features, site_list


def two_clusters(features: np.ndarray, components: int, seed: int) -> tuple[np.ndarray, float]:
    """(N,) 0/1 cluster labels of 2-means on ``features`` reduced by ICA to ``components`` dimensions (fewer when the
    data have fewer), and the split's silhouette score."""
    keep = features[:, features.std(0) > 0]
    dims = min(components, keep.shape[1], len(keep) - 1)
    if dims < 1 or len(keep) < 4:
        return np.zeros(len(features), dtype=int), 0.0
    reduced = FastICA(dims, random_state=seed, max_iter=1000, tol=1e-3, whiten="unit-variance").fit_transform(keep)
    labels = KMeans(2, n_init=10, random_state=seed).fit_predict(reduced)
    if len(np.unique(labels)) < 2:
        return labels, 0.0
    return labels, float(silhouette_score(reduced, labels))


class ActivationClustering(Defense):
    """Remove, per label, the smaller of two activation clusters when it looks like poison."""

    name = "activation_clustering"

    @params
    class Params:
        components: int = Field(10, ge=1, le=1024, description="ICA dimensions before clustering")
        analysis: Literal["relative_size", "silhouette"] = Field("relative_size", description="which cluster test")
        size_threshold: float = Field(0.35, gt=0, le=0.5, description="poison: the smaller cluster's share < this")
        silhouette_threshold: float = Field(0.1, gt=-1, lt=1, description="silhouette: and its split's score > this")
        site: str = Field("last", min_length=1, description="features clustered: a site preset or a module name")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        check_sites(cfg, site_list(self.site), key="site")

    def screen(self, synthetic: ImageSet, ctx: ScreenContext) -> np.ndarray:
        feats = screen_features(synthetic, ctx, self.site).double().numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        drop = []
        for c in np.unique(synthetic.y):
            idx = np.flatnonzero(synthetic.y == c)
            labels, silhouette = two_clusters(feats[idx], self.components, seed)
            small = int(np.argmin(np.bincount(labels, minlength=2)))
            share = float(np.mean(labels == small))
            # ART's analyses: the smaller cluster is poison when it is small, and (silhouette) the split is clear too
            poisoned = share < self.size_threshold and (
                self.analysis == "relative_size" or silhouette > self.silhouette_threshold
            )
            if poisoned and share > 0:
                drop.append(idx[labels == small])
        return np.setdiff1d(np.arange(len(synthetic)), np.concatenate(drop) if drop else [])
