"""``clp`` — channel Lipschitzness-based pruning (Zheng, Zhang, Wang & Kuang, ECCV 2022), a data-free defense: after
fusion, every convolutional channel whose upper bound on its Lipschitz constant (UCLC) stands out from its layer's
(above mean + ``u`` · standard deviation) is zeroed in a copy of the model, which is served.

Faithful [C: Zheng et al. §3.3–3.4]: a channel's UCLC is the spectral norm of its kernel (C_in × k·k), times
|γ / σ| of the BatchNorm that follows the convolution where there is one; the threshold is per layer, mean + u · std
(unbiased std, as the authors' code); u = 3 is the paper's default; no data is used. Adapted [R]: applied to the
model the server serves after each fusion (the fused model itself, and so the next round, are untouched), like
the other post-fusion baselines; the quick profile's CNN has no BatchNorm, so there the bound is the kernel's alone."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from ..params import Field, params
from .base import Defense, RoundContext


def channel_lipschitz(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """(C_out,) UCLC of each output channel: the spectral norm of its (C_in, k·k) kernel, scaled by |γ/σ| of ``bn``."""
    w = conv.weight.detach().double().flatten(2)  # (C_out, C_in, k·k)
    lips = torch.linalg.matrix_norm(w, ord=2)
    if bn is not None:
        lips = lips * (bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()).abs()
    return lips


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each Conv2d with the BatchNorm2d registered right after it (None when the next module is not one of its
    width)."""
    mods = list(model.named_modules())
    out = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            nxt = mods[i + 1][1] if i + 1 < len(mods) else None
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels else None
            out.append((name, m, bn))
    return out


def clp_prune(model: nn.Module, u: float) -> tuple[nn.Module, dict[str, list[int]]]:
    """A copy of ``model`` with the channels whose UCLC exceeds their layer's mean + ``u`` · std zeroed (kernel, bias,
    and the following BatchNorm's γ and β), and the pruned channel indices per convolution."""
    model = copy.deepcopy(model)
    pruned: dict[str, list[int]] = {}
    with torch.no_grad():
        for name, conv, bn in conv_bn_pairs(model):
            lips = channel_lipschitz(conv, bn)
            if len(lips) < 2:
                continue
            idx = torch.nonzero(lips > lips.mean() + u * lips.std()).flatten()
            pruned[name] = idx.tolist()
            conv.weight[idx] = 0
            if conv.bias is not None:
                conv.bias[idx] = 0
            if bn is not None:
                bn.weight[idx] = 0
                bn.bias[idx] = 0
    return model, pruned


class CLP(Defense):
    """Zero the channels with an outlying channel Lipschitz bound after every fusion (no data)."""

    name = "clp"

    @params
    class Params:
        u: float = Field(3.0, gt=0, le=10, description="threshold: layer mean + u · std of the channels' UCLC")
        schedule: Literal["every_round", "final"] = Field("every_round", description="prune after every fusion or once")

    def __init__(self, **params):
        super().__init__(**params)
        self.pruned: dict[str, list[int]] = {}

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        served, self.pruned = clp_prune(model, self.u)
        return served
