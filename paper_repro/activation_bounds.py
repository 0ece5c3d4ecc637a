"""Activation clipping, the machinery behind ``act_bound``, ``mm_bm``, ``mmac`` and ``pruning``: learned upper bounds
on hidden activations.

A :class:`BoundedModel` wraps a frozen model and, only while *it* runs, replaces the output a of each bounded
module by min(a, b) with per-channel (or per-neuron, or per-layer) bounds b ≥ 0. The wrapped model's parameters
and buffers are never written (tests check bit equality), and outside the wrapper the model behaves as before.
[C: MM-BM (Wang et al., IEEE S&P 2024) and MMAC (Wang et al. 2023) clip activations; docs/paper.md]
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .training import as_format

GRANULARITIES = ("channel", "neuron", "layer")
SITE_PRESETS = ("all", "mmbm3", "hidden", "last", "last_conv")


def relu_sites(model: nn.Module) -> list[str]:
    """Names of all ``nn.ReLU`` modules in forward-definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]


def resolve_sites(model: nn.Module, sites: str | list[str]) -> list[str]:
    """``sites`` as module names: a list of names, or a preset:

    - ``all``: every ReLU (MMAC's 17 sites on ResNet-18);
    - ``mmbm3``: ResNet-18 stem ReLU, layer1, layer2 outputs (MM-BM); on other models the first three ReLUs;
    - ``hidden``: every ReLU except the first (skips the raw-pixel-like first feature map);
    - ``last``: the last ReLU (penultimate features);
    - ``last_conv``: the last ReLU before the first fully connected layer (the last convolutional feature map, where
      Fine-Pruning prunes).
    """
    if not isinstance(sites, str):
        names = dict(model.named_modules())
        missing = [s for s in sites if s not in names]
        if missing:
            raise ValueError(f"no module named {missing} in {type(model).__name__}; ReLU modules: {relu_sites(model)}")
        return list(sites)
    relus = relu_sites(model)
    if not relus:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU module to bound")
    if sites == "all":
        return relus
    if sites == "mmbm3":
        if {"relu", "layer1", "layer2"} <= set(dict(model.named_modules())):
            return ["relu", "layer1", "layer2"]
        return relus[:3]
    if sites == "hidden":
        return relus[1:] or relus
    if sites == "last":
        return relus[-1:]
    if sites == "last_conv":  # the last ReLU registered before the first fully connected layer
        order = [n for n, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.Linear))]
        before = order[: next((i for i, n in enumerate(order) if n not in relus), len(order))]
        return before[-1:] or relus[-1:]
    raise ValueError(f"unknown site preset {sites!r}; use one of {list(SITE_PRESETS)} or a list of module names")


def check_sites(cfg, sites: str | list[str], key: str = "sites") -> None:
    """Raise ValueError naming ``key`` unless ``sites`` resolve on the model of config ``cfg`` (checked when the config
    is built, so that a wrong module name fails before any data is loaded rather than in round 1)."""
    from .config import image_shape, num_classes
    from .models import build_model

    model = build_model(cfg.model.name, image_shape(cfg.data.dataset), num_classes(cfg.data.dataset), seed=0)
    try:
        resolve_sites(model, sites)
    except ValueError as e:
        raise ValueError(f"{key}={sites!r} does not fit model.name={cfg.model.name!r}: {e}") from None


def _broadcast(b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Bound shapes: (1,) per layer, (C,) per channel, out.shape[1:] per neuron → broadcastable to ``out``."""
    if b.numel() == 1:
        return b.reshape(())
    if b.dim() == 1 and out.dim() > 2 and b.shape[0] == out.shape[1]:
        return b.view(1, -1, *([1] * (out.dim() - 2)))
    return b.unsqueeze(0)


@contextmanager
def clip_hooks(model: nn.Module, bounds: dict[str, torch.Tensor]):
    """While active, the output a of each module named in ``bounds`` becomes min(a, max(b, 0))."""
    mods = dict(model.named_modules())
    handles = []
    for site, b in bounds.items():

        def hook(_m, _inp, out, b=b):
            return torch.minimum(out, _broadcast(b.clamp_min(0), out).to(out.dtype))

        handles.append(mods[site].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class BoundedModel(nn.Module):
    """``model`` with a ← min(a, b_site) at each site while this wrapper runs; only ``bounds`` are trainable.

    The wrapped model is held by reference and not registered as a sub-module, so ``parameters()`` yields the
    bounds only and ``state_dict()`` holds the bounds only.
    """

    def __init__(self, model: nn.Module, bounds: dict[str, torch.Tensor]):
        super().__init__()
        object.__setattr__(self, "model", model)
        self.sites = list(bounds)
        self.bounds = nn.ParameterList([nn.Parameter(b.detach().clone().float()) for b in bounds.values()])

    def _clipping(self):
        return clip_hooks(self.model, dict(zip(self.sites, self.bounds)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        was = self.model.training
        self.model.eval()  # frozen: BatchNorm uses (and never updates) its running statistics
        try:
            with self._clipping():
                return self.model(x)
        finally:
            self.model.train(was)

    def train(self, mode: bool = True) -> "BoundedModel":
        # the wrapped model is always evaluated frozen (BN running statistics); only the flag of the wrapper changes
        self.training = mode
        return self

    @torch.no_grad()
    def clamp_(self) -> None:
        for b in self.bounds:
            b.clamp_(min=0)

    def bound_dict(self) -> dict[str, torch.Tensor]:
        return {s: b.detach().clamp_min(0).clone() for s, b in zip(self.sites, self.bounds)}


@torch.no_grad()
def record_activations(
    model: nn.Module, x: torch.Tensor, sites: list[str], reduce=lambda a: a, batch_size: int = 500
) -> dict[str, torch.Tensor]:
    """Run ``model`` in eval mode over ``x`` and return, per site, ``reduce`` (B, …) → (B, …) of the site's output,
    concatenated over batches. Hooks are removed and the training flag restored afterwards."""
    mods = dict(model.named_modules())
    chunks: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    handles = [
        mods[s].register_forward_hook(lambda _m, _i, out, s=s: chunks[s].append(reduce(out.detach().float())))
        for s in sites
    ]
    was = model.training
    model.eval()
    try:
        for xb in x.split(batch_size):
            model(xb)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {s: torch.cat(c) for s, c in chunks.items()}


def spatial_max(a: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C) max over space; (B, F) unchanged."""
    return a.flatten(2).amax(2) if a.dim() > 2 else a


def spatial_mean(a: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C) mean over space; (B, F) unchanged."""
    return a.flatten(2).mean(2) if a.dim() > 2 else a


def max_activations(
    model: nn.Module,
    x: torch.Tensor,
    sites: list[str],
    granularity: str = "channel",
    quantile: float = 1.0,
    batch_size: int = 500,
) -> dict[str, torch.Tensor]:
    """Per site, the largest activation over ``x``: per channel (max over space and samples), per neuron (channel ×
    position, max over samples) or per layer; with ``quantile`` < 1 the per-sample values are reduced by that
    quantile instead of the max (robust to a poisoned minority). Used as the data-driven initial bound."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}; choose one of {GRANULARITIES}")
    reduce = {"neuron": lambda a: a, "channel": spatial_max, "layer": lambda a: a.flatten(1).amax(1, keepdim=True)}[
        granularity
    ]
    out = {}
    for s, a in record_activations(model, x, sites, reduce, batch_size).items():
        # a: (N, C) per channel, (N, C, H, W) per neuron, (N, 1) per layer
        v = a.amax(0) if quantile >= 1.0 else torch.quantile(a.flatten(1), quantile, dim=0).view(a.shape[1:])
        out[s] = v.clamp_min(1e-6)
    return out


def margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """z_t − max_{j≠t} z_j per row. [C: MM-BD / MMAC]"""
    z_t = logits.gather(1, target[:, None])[:, 0]
    other = logits.scatter(1, target[:, None], float("-inf")).amax(1)
    return z_t - other


def fit_bounds(
    bounded: BoundedModel,
    x: torch.Tensor,
    epochs: int,
    lr: float,
    c0: float,
    growth: float,
    target_agreement: float,
    adapt_every: int,
    adapt_after: int,
    batch_size: int,
    generator: torch.Generator,
    trim: float = 0.0,
    penalty: str = "l2",
    margin_x: torch.Tensor | None = None,
    margin_t: torch.Tensor | None = None,
) -> dict:
    """Fit the bounds of ``bounded`` on unlabelled images ``x`` (the synthetic set, possibly poisoned).

    Objective per batch: fidelity + c·R(b) [+ c·mean margin of ``margin_x`` toward ``margin_t`` (MMAC)], where
    fidelity = mean over the (1 − ``trim``) batch samples with the smallest ‖f_b(x) − f(x)‖² (the trimmed ones
    are the samples whose outputs change most under clipping: triggered samples, docs/paper.md) and
    R = Σ_l ‖b_l‖₂ (``l2``, MM-BM) or 0 (``none``). Every ``adapt_every`` epochs after ``adapt_after``, c ← c·growth
    if the trimmed agreement of f_b with f's predictions is ≥ ``target_agreement``, else c ← c/growth.
    Gradients are taken w.r.t. the bounds only (``torch.autograd.grad``): the model's ``.grad`` stays untouched.
    Returns a log {"loss": [...], "c": [...], "agreement": [...]}.
    """
    model = bounded.model
    was = model.training
    model.eval()
    with torch.no_grad():
        ref = torch.cat([model(xb) for xb in x.split(1000)])  # f(x): (N, C)
    params = list(bounded.bounds)
    opt = torch.optim.Adam(params, lr=lr)
    c, log = c0, {"loss": [], "c": [], "agreement": []}
    for epoch in range(1, epochs + 1):
        agree_num = agree_den = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            out = bounded(x[idx])
            per = (out - ref[idx]).pow(2).mean(1)  # (B,)
            keep = max(1, int(round(len(per) * (1 - trim))))
            kept = per.topk(keep, largest=False).indices
            loss = per[kept].mean()
            if penalty == "l2":
                loss = loss + c * sum(b.clamp_min(0).norm() for b in params)
            if margin_x is not None:  # MMAC: a batch of backdoor-like images, same size as the clean batch
                m = torch.randint(len(margin_x), (len(idx),), generator=generator)
                loss = loss + c * margin(bounded(margin_x[m]), margin_t[m]).mean()
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            bounded.clamp_()
            with torch.no_grad():
                agree_num += (out[kept].argmax(1) == ref[idx][kept].argmax(1)).float().sum().item()
                agree_den += len(kept)
            log["loss"].append(loss.item())
        agreement = agree_num / max(agree_den, 1)
        log["agreement"].append(agreement)
        log["c"].append(c)
        if epoch > adapt_after and epoch % adapt_every == 0:
            c = c * growth if agreement >= target_agreement else c / growth
    for p in params:
        p.grad = None
    model.train(was)
    log["c_final"] = c
    return log


def reverse_engineer(
    model: nn.Module,
    shape: tuple[int, ...],
    num_classes: int,
    per_class: int,
    steps: int,
    lr: float,
    momentum: float,
    generator: torch.Generator,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MMAC's backdoor-like samples: per class t, ``per_class`` uniform images in [−1, 1] optimised with SGD to
    maximise the margin z_t − max_{j≠t} z_j of the original model. [C: MMAC mmac.py; inputs here in [−1, 1]
    because our models see Normalize(0.5, 0.5)]"""
    model.eval()
    t = torch.arange(num_classes).repeat_interleave(per_class)
    # in the format the model trained in (same values, faster)
    xr = as_format(torch.rand((len(t), *shape), generator=generator) * 2 - 1, channels_last).requires_grad_(True)
    opt = torch.optim.SGD([xr], lr=lr, momentum=momentum)
    for _ in range(steps):
        loss = -margin(model(xr), t).sum()
        (g,) = torch.autograd.grad(loss, [xr])
        xr.grad = g
        opt.step()
        with torch.no_grad():
            xr.clamp_(-1, 1)
    return xr.detach(), t
