"""``act_bound_cc`` — class-conditional activation bounds, a diagnostic variant of ``act_bound`` for the defense
study's H2 (docs/protocol.md): one set of bounds per class, each the ``init_quantile`` quantile of the activations
of the fitting images that the fused model assigns to that class; an image is clipped with the bounds of the class
the unbounded model predicts for it.

Why: a unit selective for class k fires on about a tenth of a class-balanced fitting set, so one global 0.9-quantile
bound lands inside class k's own range and caps class k's true evidence. A bound per predicted class keeps each
class's evidence within its own range. If act_bound's rise of ASR against full-image triggers comes from that cap,
it should vanish here (H2). No refinement epochs: the bounds are the quantiles (the refinement moved act_bound's
validation ASR by 0.005).

A class with fewer than ``min_images`` fitting images falls back to the bounds of all fitting images. [R]"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from ..activation_bounds import GRANULARITIES, max_activations, resolve_sites
from ..params import Field, params
from .act_bound import ActBound, Sites
from .base import RoundContext


@params
class ClassBoundParams:
    """Where the bounds go, their shape, the fitting set and the quantile (act_bound's defaults)."""

    sites: Sites = Field("hidden", description="module names or a preset ('hidden': all ReLUs but the first)")
    granularity: Literal[GRANULARITIES] = Field("neuron", description="bound shape: neuron, channel or layer")
    per_class: int = Field(50, ge=0, description="synthetic images per label used for fitting (0: all)")
    init_quantile: float = Field(0.9, gt=0, le=1, description="quantile of each predicted class's activations")
    min_images: int = Field(10, ge=1, description="a class with fewer fitting images takes the global bounds")
    schedule: Literal["every_round", "final"] = Field(
        "every_round", description="fit after every fusion, or only after the last"
    )
    fit_draw: Literal["round", "run"] = Field(
        "round", description="the fitting images drawn by the round alone, or by run seed and round"
    )


def _per_sample(b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Bounds (N, *shape) of one image each → broadcastable to ``out`` (N, …): a per-channel (N, C) bound on a
    feature map (N, C, H, W) becomes (N, C, 1, 1)."""
    return b.view(*b.shape, *([1] * (out.dim() - b.dim())))


@contextmanager
def per_image_clip(model: nn.Module, bounds: dict[str, torch.Tensor]):
    """While active, the output a of each module named in ``bounds`` (N, *shape per image) becomes min(a, b)."""
    mods = dict(model.named_modules())
    handles = [
        mods[site].register_forward_hook(
            lambda _m, _i, out, b=b: torch.minimum(out, _per_sample(b.clamp_min(0), out).to(out.dtype))
        )
        for site, b in bounds.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class ClassBoundedModel(nn.Module):
    """``model`` clipped, image by image, with the bounds of the class the unbounded model predicts (two passes)."""

    def __init__(self, model: nn.Module, bounds: dict[str, torch.Tensor]):
        super().__init__()
        object.__setattr__(self, "model", model)  # held by reference, not a sub-module
        self.class_bounds = {s: b.detach().clone() for s, b in bounds.items()}
        """Per site, (K, *shape): the bounds of each of the K classes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                cls = self.model(x).argmax(1)
            with per_image_clip(self.model, {s: b.to(x.device)[cls] for s, b in self.class_bounds.items()}):
                return self.model(x)
        finally:
            self.model.train(was)


def class_bounds(
    model: nn.Module, x: torch.Tensor, sites: list[str], granularity: str, quantile: float, min_images: int, k: int
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Per site, (k, *shape): the ``quantile`` of the activations of the images of ``x`` that ``model`` predicts as
    each class, or of all of ``x`` for a class with fewer than ``min_images`` of them (those classes returned)."""
    with torch.no_grad():
        was = model.training
        model.eval()
        pred = model(x).argmax(1)
        model.train(was)
    overall = max_activations(model, x, sites, granularity, quantile)
    per, fallback = [], []
    for c in range(k):
        mine = pred == c
        if mine.sum() >= min_images:
            per.append(max_activations(model, x[mine], sites, granularity, quantile))
        else:
            per.append(overall)
            fallback.append(c)
    return {s: torch.stack([p[s] for p in per]) for s in sites}, fallback


class ActBoundClassConditional(ActBound):
    """Bounds per predicted class, at the quantile of that class's fitting activations; weights untouched."""

    name = "act_bound_cc"
    Params = ClassBoundParams

    def client_context(self):
        return None

    @property
    def trains_like_none(self) -> bool:
        return True

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        x = ctx.as_input(self.fit_data(ctx))
        sites = resolve_sites(model, self.sites)
        k = ctx.synthetic.num_classes
        bounds, fallback = class_bounds(model, x, sites, self.granularity, self.init_quantile, self.min_images, k)
        self.bounds = None  # nothing is shipped to clients
        self.log = {"classes_on_global_bounds": fallback}
        return ClassBoundedModel(model, bounds)
