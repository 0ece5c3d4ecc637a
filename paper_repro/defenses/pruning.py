"""Post-training pruning: after fusion, silence the ``fraction`` of channels of the last convolutional layer with
the lowest mean activation on the server's synthetic set (dormant channels carry backdoors; Liu et al. 2018
"Fine-Pruning", which prunes the last convolutional layer; used as a baseline with 20 % by 2401.10375), optionally
followed by Fine-Pruning's fine-tuning on the synthetic set. [C: p = 20 %, last conv layer; R: ranking and
fine-tuning data = synthetic set] Pruning is a bound of 0 on a :class:`BoundedModel`: without fine-tuning the
weights stay untouched; fine-tuning trains a copy that is served, never the fused model itself.

``site="last"`` (the last ReLU, a fully connected layer in the quick CNN) was the default before: there the
lowest-mean units were dead (mean ≤ 0.01) and pruning them changed no prediction."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from ..activation_bounds import (
    SITE_PRESETS,
    BoundedModel,
    check_sites,
    clip_hooks,
    record_activations,
    resolve_sites,
    spatial_mean,
)
from ..params import Field, params
from ..training import train_supervised
from .base import Defense, RoundContext


def mean_activations(model: nn.Module, x: torch.Tensor, site: str) -> torch.Tensor:
    """Mean activation per channel/neuron of module ``site`` over ``x``."""
    return record_activations(model, x, [site], spatial_mean)[site].mean(0)


class Pruning(Defense):
    """Prune ``fraction`` of the channels at ``site`` (default: the last ReLU) after every fusion."""

    name = "pruning"

    @params
    class Params:
        fraction: float = Field(0.2, gt=0, lt=1, description="share of the site's channels pruned (least active)")
        site: str = Field("last_conv", min_length=1, description="a module name or a preset of resolve_sites")
        schedule: Literal["every_round", "final"] = Field("every_round", description="prune after every fusion or once")
        finetune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning on the synthetic set after pruning")
        finetune_lr: float = Field(0.01, ge=0, description="learning rate of that fine-tuning")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        check_sites(cfg, self.site if self.site in SITE_PRESETS else [self.site], key="site")

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        site = resolve_sites(model, self.site if self.site in SITE_PRESETS else [self.site])[0]
        x, y = ctx.synthetic.tensors(ctx.device)
        act = mean_activations(model, ctx.as_input(x), site)
        bound = torch.full_like(act, float("inf"))
        bound[act.argsort()[: int(self.fraction * len(act))]] = 0.0
        if self.finetune_epochs:
            model = copy.deepcopy(model)
            with clip_hooks(model, {site: bound}):
                train_supervised(
                    model, x, y, self.finetune_epochs, self.finetune_lr, 0.9, 64, ctx.generator, ctx.channels_last
                )
        return BoundedModel(model, {site: bound})
