"""``mm_bm`` — MM-BM activation clipping (Wang, Xiang, Miller, Kesidis, IEEE S&P 2024; ``wanghangpsu/MM-BD``
univ_bm.py), applied centrally to the fused global model with the synthetic set (docs/paper.md).

Faithful hyper-parameters [C]: 3 sites (stem, layer1, layer2 on ResNet-18; first three ReLUs elsewhere),
per-channel bounds, objective MSE(f_b(x), f(x)) + c·Σ‖b_l‖₂, Adam lr 0.1, batch 200, 50 epochs, c₀ = 0.5, ×/÷ 1.2
at epochs 20, 30, 40 toward 95 % accuracy; 50 images per class kept only if classified correctly. Adaptations [R]:
the images are synthetic (possibly poisoned) instead of CIFAR test images; bounds start at the data maximum (the
original's 8.0 assumes un-normalised inputs; ``init="constant"`` restores it); clamped ≥ 0; fitted once after the
last fusion (``schedule="final"``, the centralised use of docs/paper.md).
"""

from __future__ import annotations

import torch

from ..params import variant
from ..rng import legacy_rng
from .act_bound import ActBound, BoundParams, fit_subset
from .base import RoundContext


class MMBM(ActBound):
    name = "mm_bm"

    Params = variant(
        BoundParams,
        "MM-BM's knobs at its paper's values [C] (bounds at the data maximum [R]).",
        sites="mmbm3",
        granularity="channel",
        init_quantile=1.0,
        epochs=50,
        lr=0.1,
        c0=0.5,
        adapt_every=10,
        adapt_after=10,
        schedule="final",
    )
    trim, penalty, deploy = 0.0, "l2", "server"  # MM-BM's objective: no trimming, the L2 penalty, the server only

    def fit_data(self, ctx: RoundContext) -> torch.Tensor:
        """50 synthetic images per class, kept only if the fused model classifies them as labelled [C]."""
        idx = fit_subset(ctx.synthetic.y, self.per_class, self.fit_rng(ctx, legacy_rng(ctx.round)))
        x, y = ctx.synthetic.subset(idx).tensors(ctx.device)
        keep = ctx.predict(ctx.global_model, x).argmax(1) == y
        return x[keep] if keep.any() else x


class MMBMNeuron(MMBM):
    """MM-BM with act_bound's bound shape: per-neuron bounds started at the 0.9 quantile of the fitting set's
    activations (instead of per-channel bounds at the maximum), the rest of MM-BM unchanged. Separates what
    act_bound owes to its bound shape from what it owes to its objective and schedule. [R]"""

    name = "mm_bm_neuron"

    Params = variant(
        MMBM.Params, "MM-BM with per-neuron bounds at the 0.9 quantile.", granularity="neuron", init_quantile=0.9
    )
