"""``act_bound_dm`` — act_bound with its bounds fitted by distribution matching instead of MM-BM's output fidelity,
after the second author's single-model bounding code (BNA, "Backdoor Mitigation by Correcting Distribution of Neural
Activation"; docs/paper.md, "The defense").

BNA [C: its code]: per-channel upper bounds, fitted layer by layer; for each channel the bound is moved (Adam) until
the soft histogram of the bounded activations on *triggered* images matches the histogram of the activations on
clean images, in total-variation distance. Adaptations [R]:
- a data-free server has no triggered images: MMAC's reverse-engineered backdoor-like images stand in (per class
  ``re_per_class`` images that maximise the fused model's margin for that class; one set per fit);
- the clean histogram comes from the synthetic fitting set (``per_class`` images per label, as act_bound);
- histogram range per channel: 0 to the largest activation seen on either set, ``bins`` bins; BNA's temperature
  (150 at bin width 0.1) becomes ``sharpness`` = 15 bin widths;
- left out: BNA's re-estimation of BatchNorm statistics and its test-time rule (the corrected prediction is used only
  where the original model predicts the target class), which needs the target class the server does not know.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..activation_bounds import BoundedModel, clip_hooks, record_activations, resolve_sites, reverse_engineer
from ..params import Field, params
from .act_bound import ActBound, Sites
from .base import RoundContext
from .mmac import ReverseParams


def channel_values(a: torch.Tensor, max_values: int, generator: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) or (N, C) activations → (C, M) values per channel, at most ``max_values`` random ones each."""
    v = a.transpose(0, 1).flatten(1) if a.dim() > 2 else a.T
    if v.shape[1] > max_values:
        v = v[:, torch.randperm(v.shape[1], generator=generator)[:max_values]]
    return v.contiguous()


def soft_histogram(v: torch.Tensor, edges: torch.Tensor, sharpness: float) -> torch.Tensor:
    """(C, M) values, (C, B+1) increasing edges → (C, B) differentiable histogram (each row sums to 1): a value's
    weight in bin [e_i, e_i+1) is σ(k(v − e_i)) − σ(k(v − e_i+1)), with k = ``sharpness`` / bin width."""
    k = sharpness / (edges[:, 1:2] - edges[:, :1])
    s = torch.sigmoid(k[:, :, None] * (v[:, None, :] - edges[:, :, None]))  # (C, B+1, M)
    h = (s[:, :-1] - s[:, 1:]).sum(-1)
    return h / h.sum(1, keepdim=True).clamp_min(1e-12)


def match_bounds(
    clean: torch.Tensor, triggered: torch.Tensor, bins: int, sharpness: float, steps: int, lr: float, tol: float
) -> tuple[torch.Tensor, float]:
    """Per-channel bounds b (C,) such that the histogram of min(triggered, b) matches that of ``clean`` (both
    (C, M)) in total variation; b starts at the clean maximum and moves by Adam on b / range. Returns (b, final TV
    summed over channels)."""
    hi = torch.maximum(clean.amax(1), triggered.amax(1)).clamp_min(1e-6)  # (C,)
    width = hi / (bins - 1)
    edges = -0.5 * width[:, None] + width[:, None] * torch.arange(bins + 1, dtype=clean.dtype)  # 0 mid first bin
    target = soft_histogram(clean, edges, sharpness)
    u = (clean.amax(1) / hi).clone().requires_grad_(True)  # b = u · hi
    opt = torch.optim.Adam([u], lr=lr)
    last = None
    for _ in range(steps):
        tv = 0.5 * (soft_histogram(torch.minimum(triggered, (u * hi)[:, None]), edges, sharpness) - target).abs().sum()
        if last is not None and abs(last - tv.item()) <= tol * max(last, 1e-12):
            break
        last = tv.item()
        opt.zero_grad()
        tv.backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(min=0)
    return (u.detach() * hi).clamp_min(1e-6), float(last if last is not None else float("nan"))


class ActBoundDM(ActBound):
    """Per-channel bounds at ``sites``, fitted layer by layer by distribution matching (module docstring); the
    served model is bounded, the weights stay as fused. Parameters: ``sites``, ``per_class`` and ``schedule`` as
    act_bound; ``bins``, ``sharpness``, ``steps``, ``lr``, ``tol`` (BNA: Adam lr 0.01, early stop at a relative
    change below 1e-5); ``max_values`` activations per channel enter a histogram; ``re_*`` MMAC's reverse
    engineering (MMAC: 50 per class, 300 steps; fewer here: it runs after every fusion)."""

    name = "act_bound_dm"

    @params
    class Params(ReverseParams):
        sites: Sites = Field("hidden", description="module names or a preset ('hidden': all ReLUs but the first)")
        per_class: int = Field(50, ge=0, description="synthetic images per label for the clean histograms (0: all)")
        bins: int = Field(20, ge=2, description="histogram bins per channel")
        sharpness: float = Field(15.0, gt=0, description="soft-histogram temperature, in bin widths (BNA: 15)")
        steps: int = Field(100, ge=1, description="Adam steps per layer")
        lr: float = Field(0.01, gt=0, description="Adam learning rate (BNA: 0.01)")
        tol: float = Field(1e-5, ge=0, description="stop at a relative change of the TV distance below this")
        max_values: int = Field(4000, ge=1, description="activations per channel that enter a histogram")
        re_per_class: int = Field(20, ge=1, description="backdoor-like images per class (MMAC: 50)")
        re_steps: int = Field(100, ge=0, description="SGD steps per image set (MMAC: 300)")
        schedule: Literal["every_round", "final"] = Field(
            "every_round", description="fit after every fusion, or only after the last"
        )

    granularity, epochs, trim, penalty, deploy = "channel", 0, 0.0, "l2", "server"  # per-channel, no MM-BM fitting
    fit_draw = "round"

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        x = ctx.as_input(self.fit_data(ctx))
        xr, _ = reverse_engineer(
            model,
            tuple(x.shape[1:]),
            ctx.synthetic.num_classes,
            self.re_per_class,
            self.re_steps,
            self.re_lr,
            self.re_momentum,
            ctx.generator,
            ctx.channels_last,
        )
        bounds: dict[str, torch.Tensor] = {}
        self.log = {"tv": {}}
        for site in resolve_sites(model, self.sites):
            with clip_hooks(model, bounds):  # the layers before this one are already bounded
                clean = record_activations(model, x, [site])[site]
                trig = record_activations(model, xr, [site])[site]
            bounds[site], self.log["tv"][site] = match_bounds(
                channel_values(clean, self.max_values, ctx.generator),
                channel_values(trig, self.max_values, ctx.generator),
                self.bins,
                self.sharpness,
                self.steps,
                self.lr,
                self.tol,
            )
        self.bounds = bounds
        return BoundedModel(model, bounds)
