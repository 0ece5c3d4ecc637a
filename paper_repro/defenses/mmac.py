"""``mmac`` — MMAC activation clipping (Wang et al. 2023, "Improved Activation Clipping for Universal Backdoor
Mitigation and Test-Time Detection"; ``wanghangpsu/MMAC`` mmac.py), applied centrally to the fused global model with
the synthetic set (docs/paper.md).

Faithful [C]: bounds after every ReLU, per channel; objective MSE(f_b(x), f(x)) + c·Σ margins z_t − max_{j≠t} z_j of
the bounded model on backdoor-like images (per class 50 images optimised 300 SGD steps, lr 0.01, momentum 0.2, to
maximise the original model's margin); Adam lr 0.1, batch 200, 300 epochs, c₀ = 0.002, ×/÷ 1.2 every 10 epochs
after 30 toward 95 % clean accuracy. Adaptations [R]: synthetic instead of CIFAR test images; data-max initial
bounds (original 1.0, ``init="constant", init_value=1.0``); the backdoor-like images are made once per fit instead of
at epochs 0/100/200; each step uses a random batch of them the size of the clean batch; fitted after the last fusion.
"""

from __future__ import annotations

from torch import nn

from ..activation_bounds import BoundedModel, fit_bounds, resolve_sites, reverse_engineer
from .act_bound import ActBound
from .base import RoundContext


class MMAC(ActBound):
    name = "mmac"

    def __init__(
        self,
        sites: str | list[str] = "all",
        per_class: int = 50,
        init: str = "data_max",
        init_value: float = 1.0,
        epochs: int = 300,
        lr: float = 0.1,
        batch_size: int = 200,
        c0: float = 0.002,
        growth: float = 1.2,
        target_agreement: float = 0.95,
        adapt_every: int = 10,
        adapt_after: int = 30,
        re_per_class: int = 50,
        re_steps: int = 300,
        re_lr: float = 0.01,
        re_momentum: float = 0.2,
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
            penalty="none",
            init_quantile=init_quantile,
        )
        self.re_per_class, self.re_steps, self.re_lr, self.re_momentum = re_per_class, re_steps, re_lr, re_momentum

    def after_fusion(self, model: nn.Module, ctx: RoundContext) -> nn.Module:
        if self.schedule == "final" and not ctx.is_final:
            return model
        x = ctx.as_input(self.fit_data(ctx))
        xr, tr = reverse_engineer(
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
        sites = resolve_sites(model, self.sites)
        bounded = BoundedModel(model, self.initial_bounds(model, x, sites))
        self.log = fit_bounds(
            bounded,
            x,
            self.epochs,
            self.lr,
            self.c0,
            self.growth,
            self.target_agreement,
            self.adapt_every,
            self.adapt_after,
            self.batch_size,
            ctx.generator,
            trim=0.0,
            penalty="none",
            margin_x=xr,
            margin_t=tr,
        )
        self.bounds = bounded.bound_dict()
        return bounded


class MMACNeuron(MMAC):
    """MMAC with act_bound's bound shape: per-neuron bounds started at the 0.9 quantile (see
    :class:`~paper_repro.defenses.mm_bm.MMBMNeuron`). [R]"""

    name = "mmac_neuron"

    def __init__(self, granularity: str = "neuron", init_quantile: float = 0.9, **kw):
        super().__init__(granularity=granularity, init_quantile=init_quantile, **kw)
