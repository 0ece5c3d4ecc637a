"""``spectral`` — spectral signatures on the server's synthetic set (Tran, Li & Madry, NeurIPS 2018), a data-side
defense against a poisoned FM: before the rounds, per label, the step-0 model's penultimate features are centred, each
image is scored by its squared projection on the top singular vector, and the ``1.5·epsilon`` share of the label with
the highest scores is removed; the server then initialises again on what is left and fuses on it.

Faithful [C: Tran et al. §4]: representations of the layer before the classifier, per-label top right singular
vector of the centred matrix, removal of 1.5·ε·n per label, retraining on the rest. Adapted [R]: the data are the
server's synthetic set and the representation model is the server's own step-0 model (trained on the unscreened
set), so nothing outside what a server holds is used. ``epsilon`` is an assumed upper bound on the poisoned share of
a label; the method presumes poison is a minority of its label."""

from __future__ import annotations

import numpy as np
import torch

from ..activation_bounds import SITE_PRESETS, check_sites, record_activations, resolve_sites
from ..data import ImageSet
from ..params import Field, params
from ..training import as_format
from .base import Defense, ScreenContext


def spectral_scores(features: torch.Tensor) -> np.ndarray:
    """(N,) squared projections of the centred ``features`` (N, D) on their top right singular vector."""
    m = features.double() - features.double().mean(0, keepdim=True)
    if len(m) < 2 or not torch.any(m != 0):
        return np.zeros(len(m))
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    return ((m @ vh[0]) ** 2).numpy()


def site_list(site: str) -> str | list[str]:
    """``site`` as :func:`resolve_sites` takes it: a preset as is, a module name as a one-item list."""
    return site if site in SITE_PRESETS else [site]


def screen_features(synthetic: ImageSet, ctx: ScreenContext, site: str) -> torch.Tensor:
    """(N, D) activations of ``ctx.model`` on ``synthetic`` at ``site`` (a preset of :func:`resolve_sites`, its first
    site, or a module name), spatial maps flattened, on the CPU."""
    name = resolve_sites(ctx.model, site_list(site))[0]
    x = as_format(synthetic.tensors(ctx.device)[0], ctx.channels_last)
    return record_activations(ctx.model, x, [name], lambda a: a.flatten(1), ctx.eval_batch_size)[name].cpu()


class SpectralSignatures(Defense):
    """Remove, per label, the ``1.5·epsilon`` share of synthetic images with the largest spectral score."""

    name = "spectral"

    @params
    class Params:
        epsilon: float = Field(0.1, gt=0, lt=0.67, description="assumed upper bound on a label's poisoned share")
        site: str = Field("last", min_length=1, description="features ranked: a site preset or a module name")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        check_sites(cfg, site_list(self.site), key="site")

    def screen(self, synthetic: ImageSet, ctx: ScreenContext) -> np.ndarray:
        feats = screen_features(synthetic, ctx, self.site)
        drop = []
        for c in np.unique(synthetic.y):
            idx = np.flatnonzero(synthetic.y == c)
            n_drop = int(np.floor(1.5 * self.epsilon * len(idx) + 1e-9))
            if n_drop == 0:
                continue
            scores = spectral_scores(feats[idx])
            drop.append(idx[np.argsort(-scores, kind="stable")[:n_drop]])
        return np.setdiff1d(np.arange(len(synthetic)), np.concatenate(drop) if drop else [])
