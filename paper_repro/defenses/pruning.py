"""Post-training pruning: after fusion, silence the ``fraction`` of channels of the last hidden layer with the
lowest mean activation on the server's synthetic set (dormant channels carry backdoors; Liu et al. 2018 "Fine-
Pruning"; used as a baseline with 20 % by 2401.10375). [C: p = 20 %; R: ranking data = synthetic set, site = last
ReLU] Implemented as bounds of 0 (pruned) / +inf (kept) on a :class:`BoundedModel`, so the weights stay untouched."""
from __future__ import annotations

import torch
from torch import nn

from .base import Defense, RoundContext
from .clipping import BoundedModel, check_sites, record_activations, resolve_sites, spatial_mean


def mean_activations(model: nn.Module, x: torch.Tensor, site: str) -> torch.Tensor:
    """Mean activation per channel/neuron of module ``site`` over ``x``."""
    return record_activations(model, x, [site], spatial_mean)[site].mean(0)


class Pruning(Defense):
    """Prune ``fraction`` of the channels at ``site`` (default: the last ReLU) after every fusion."""

    name = "pruning"

    def __init__(self, fraction: float = 0.2, site: str = "last", schedule: str = "every_round"):
        if not 0 <= fraction < 1:
            raise ValueError(f"fraction={fraction} must be in [0, 1)")
        if schedule not in ("every_round", "final"):
            raise ValueError(f"schedule={schedule!r}; choose every_round or final")
        self.fraction, self.site, self.schedule = fraction, site, schedule

    def check_config(self, cfg) -> None:
        check_sites(cfg, "last" if self.site == "last" else [self.site], key="site")

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        site = resolve_sites(model, "last" if self.site == "last" else [self.site])[0]
        act = mean_activations(model, ctx.synthetic.tensors(ctx.device)[0], site)
        bound = torch.full_like(act, float("inf"))
        bound[act.argsort()[: int(self.fraction * len(act))]] = 0.0
        return BoundedModel(model, {site: bound})
