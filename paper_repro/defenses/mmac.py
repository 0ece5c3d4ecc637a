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
from ..params import Field, params, variant
from .act_bound import ActBound, BoundParams
from .base import RoundContext


@params
class ReverseParams:
    """MMAC's reverse engineering of backdoor-like images (per class, SGD on the input) [C: MMAC]."""

    re_per_class: int = Field(50, ge=1, description="backdoor-like images per class (MMAC: 50)")
    re_steps: int = Field(300, ge=0, description="SGD steps per image set (MMAC: 300)")
    re_lr: float = Field(0.01, gt=0, description="SGD learning rate (MMAC: 0.01)")
    re_momentum: float = Field(0.2, ge=0, lt=1, description="SGD momentum (MMAC: 0.2)")


@params
class MMACParams(BoundParams, ReverseParams):
    """The bound-fitting knobs and the reverse-engineering ones."""


class MMAC(ActBound):
    name = "mmac"

    Params = variant(
        MMACParams,
        "MMAC's knobs at its paper's values [C] (bounds at the data maximum [R]).",
        sites="all",
        granularity="channel",
        init_quantile=1.0,
        init_value=1.0,
        epochs=300,
        lr=0.1,
        c0=0.002,
        adapt_every=10,
        adapt_after=30,
        schedule="final",
    )
    trim, penalty, deploy = 0.0, "none", "server"  # MMAC's objective: fidelity + the margin term, the server only

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

    Params = variant(
        MMAC.Params, "MMAC with per-neuron bounds at the 0.9 quantile.", granularity="neuron", init_quantile=0.9
    )
