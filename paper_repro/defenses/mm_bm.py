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

from ..rng import legacy_rng
from .act_bound import ActBound, fit_subset
from .base import RoundContext


class MMBM(ActBound):
    name = "mm_bm"

    def __init__(
        self,
        sites: str | list[str] = "mmbm3",
        per_class: int = 50,
        init: str = "data_max",
        init_value: float = 8.0,
        epochs: int = 50,
        lr: float = 0.1,
        batch_size: int = 200,
        c0: float = 0.5,
        growth: float = 1.2,
        target_agreement: float = 0.95,
        adapt_every: int = 10,
        adapt_after: int = 10,
        schedule: str = "final",
        granularity: str = "channel",
        init_quantile: float = 1.0,
    ):
        super().__init__(
            sites=sites,
            granularity=granularity,
            per_class=per_class,
            init=init,
            init_value=init_value,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            c0=c0,
            growth=growth,
            target_agreement=target_agreement,
            adapt_every=adapt_every,
            adapt_after=adapt_after,
            trim=0.0,
            schedule=schedule,
            penalty="l2",
            init_quantile=init_quantile,
        )

    def fit_data(self, ctx: RoundContext) -> torch.Tensor:
        """50 synthetic images per class, kept only if the fused model classifies them as labelled [C]."""
        idx = fit_subset(ctx.synthetic.y, self.per_class, legacy_rng(ctx.round))  # by round, as first defined
        x, y = ctx.synthetic.subset(idx).tensors(ctx.device)
        keep = ctx.predict(ctx.global_model, x).argmax(1) == y
        return x[keep] if keep.any() else x


class MMBMNeuron(MMBM):
    """MM-BM with act_bound's bound shape: per-neuron bounds started at the 0.9 quantile of the fitting set's
    activations (instead of per-channel bounds at the maximum), the rest of MM-BM unchanged. Separates what
    act_bound owes to its bound shape from what it owes to its objective and schedule. [R]"""

    name = "mm_bm_neuron"

    def __init__(self, granularity: str = "neuron", init_quantile: float = 0.9, **kw):
        super().__init__(granularity=granularity, init_quantile=init_quantile, **kw)
