"""``fm_bound_aware`` — an adaptive FM attack on activation bounding (ours): the compromised FM knows the defense
and poisons its synthetic set with a trigger designed to pass the bounds.

Activation bounding works when the backdoor rides on a few units that fire far above anything clean data makes them
do: the bounds, fitted on the synthetic set, cut those peaks. The attacker, who controls the FM and so has the clean
synthetic set, instead looks for a trigger whose features are ones clean images already produce:

1. train a surrogate of the global model (same architecture, the server's own initialisation recipe) on the clean
   synthetic set;
2. predict the bounds the defense will fit: per unit, the ``quantile`` quantile of the surrogate's activations at
   act_bound's sites over ``per_class`` images per class (act_bound's defaults);
3. optimise one additive full-image pattern δ (‖δ‖∞ ≤ ``epsilon`` of the pixel range) on the non-target images:
   cross-entropy to the target class (a targeted universal perturbation: the target class's own features) plus
   ``lam`` × the mean excess of every bounded activation over its predicted bound, Adam for ``steps`` steps;
4. poison the synthetic set with δ as the FM attack does with a patch (same share, same classes, same stages).

The ASR test images carry the same δ. The attacker's extra cost is one surrogate training and ``steps`` gradient
steps on the set it drew anyway (logged in ``info``). [R: the attacker does not know the final global model, only
its architecture and the server's recipe; ε = 16/255 as in clean-label and universal-perturbation attacks]"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..activation_bounds import max_activations, record_activations, resolve_sites
from ..config import Config
from ..data import ImageSet
from ..defenses.act_bound import ActBound, fit_subset
from ..models import build_model
from ..params import Field, params
from ..rng import derive_seed, np_rng, torch_gen
from ..training import train_supervised
from .fm_poisoning import FMPoisoning


class PatternTrigger:
    """An additive pattern ``delta`` (C, H, W) in pixel units: x ↦ clip(round(x + delta)) on uint8 images."""

    kind = "pattern"

    def __init__(self, delta: np.ndarray):
        self.delta = np.asarray(delta, np.float32)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x.astype(np.float32) + self.delta), 0, 255).astype(np.uint8)


ACT_BOUND = ActBound.Params()
"""The bounds it aims to stay under: act_bound's defaults (sites, granularity, quantile, fitting set size)."""


class FMBoundAware(FMPoisoning):
    """FM poisoning with a trigger optimised to stay under the bounds activation bounding would fit."""

    name = "fm_bound_aware"

    @params
    class Params:
        epsilon: float = Field(round(16 / 255, 4), gt=0, le=1, description="L∞ budget of the trigger pattern")
        steps: int = Field(200, ge=1, description="Adam steps optimising the pattern")
        lam: float = Field(1.0, ge=0, description="weight of the stay-under-the-bounds term")
        lr: float = Field(0.01, gt=0, description="Adam learning rate on the pattern")
        quantile: float = Field(
            ACT_BOUND.init_quantile, gt=0, le=1, description="quantile of the bounds it expects (act_bound's)"
        )
        per_class: int = Field(
            ACT_BOUND.per_class, ge=1, description="synthetic images per label the bounds are fitted on"
        )

    def __init__(self, *args, cfg: Config, params=None, **kw):
        super().__init__(*args, **kw)
        self.set_params(params)
        self.cfg = cfg
        self.trigger = None  # made from the synthetic set in poison_synthetic
        self.info: dict = {}

    @classmethod
    def from_config(cls, cfg: Config) -> FMBoundAware:
        a = cfg.attack
        return cls(
            None,
            a.target_class,
            a.poison_ratio,
            a.fm_stages,
            np_rng(cfg.seed, "fm_poison"),
            a.mapping,
            cfg=cfg,
            params=cls.params_of(cfg),
        )

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.attack.mapping != "all_to_one":
            raise ValueError(
                "attack.kind='fm_bound_aware' optimises an all-to-one trigger: set attack.mapping='all_to_one'"
            )

    def poison_synthetic(self, clean: ImageSet) -> tuple[ImageSet, ImageSet, np.ndarray]:
        self.trigger = PatternTrigger(self.optimise_trigger(clean))
        return super().poison_synthetic(clean)

    def asr_trigger(self, cfg: Config) -> PatternTrigger:
        if self.trigger is None:
            raise RuntimeError(
                "fm_bound_aware: the trigger is made from the synthetic set; call poison_synthetic first"
            )
        return self.trigger

    def optimise_trigger(self, clean: ImageSet) -> np.ndarray:
        """Steps 1–3 of the module docstring: δ in pixel units (C, H, W)."""
        cfg, fl, t0 = self.cfg, self.cfg.fl, time.perf_counter()
        x, y = clean.tensors()
        model = build_model(cfg.model.name, clean.shape, clean.num_classes, derive_seed(cfg.seed, "bound_aware_net"))
        train_supervised(
            model,
            x,
            y,
            fl.init_epochs,
            fl.init_lr,
            fl.momentum,
            fl.batch_size,
            torch_gen(cfg.seed, "bound_aware_train"),
        )
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        sites = resolve_sites(model, ACT_BOUND.sites)
        fit = x[torch.as_tensor(fit_subset(clean.y, self.per_class, np_rng(cfg.seed, "bound_aware_fit")))]
        bounds = max_activations(model, fit, sites, ACT_BOUND.granularity, self.quantile)
        source = x[y != self.target]
        eps = 2 * self.epsilon  # the pixel range is [-1, 1] after normalisation
        delta = torch.zeros((1, *clean.shape), requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr)
        gen = torch_gen(cfg.seed, "bound_aware_batches")
        mods = dict(model.named_modules())
        acts: dict[str, torch.Tensor] = {}
        hooks = [mods[s].register_forward_hook(lambda _m, _i, out, s=s: acts.__setitem__(s, out)) for s in sites]
        target = torch.full((fl.batch_size * 4,), self.target)
        try:
            for _ in range(self.steps):
                xb = source[torch.randint(len(source), (len(target),), generator=gen)]
                logits = model((xb + delta).clamp(-1, 1))
                excess = sum((F.relu(acts[s] - bounds[s]) / bounds[s].mean()).mean() for s in sites) / len(sites)
                loss = F.cross_entropy(logits, target) + self.lam * excess
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    delta.clamp_(-eps, eps)
        finally:
            for h in hooks:
                h.remove()
        delta_px = (delta.detach()[0] * 127.5).numpy()
        self.info = {
            "seconds": round(time.perf_counter() - t0, 1),
            **self._check(model, source, bounds, sites, delta_px),
        }
        return delta_px

    def _check(self, model, source: torch.Tensor, bounds: dict, sites: list[str], delta_px: np.ndarray) -> dict:
        """On the surrogate: the share of bounded activations above the predicted bounds and the share classified
        as the target, for the triggered images and for the same images clean (what the design aims at: the first
        close to clean)."""
        from ..data import to_float, to_uint8

        raw = to_uint8(source[:500])
        out = {}
        for name, trig in (("pattern", PatternTrigger(delta_px)), ("clean", None)):
            xt = to_float(trig.apply(raw) if trig is not None else raw)
            acts = record_activations(model, xt, sites)
            over = np.mean([float((acts[s] > bounds[s]).float().mean()) for s in sites])
            with torch.no_grad():
                hit = float((model(xt).argmax(1) == self.target).float().mean())
            out[f"{name}_over_bounds"], out[f"{name}_to_target"] = round(over, 4), round(hit, 4)
        return out
