"""``neurotoxin`` — Zhang et al., "Neurotoxin: durable backdoors in federated learning" (ICML 2022): the attacker
confines its training to coordinates that benign clients rarely change, so that later benign rounds do not overwrite
the backdoor. The benign direction is estimated from the last change of the global model, G_t − G_{t−1}; the top
``mask_ratio`` of its coordinates by magnitude are masked off **in every local step** (the gradient is projected
onto the other coordinates before each SGD step, so neither the step nor the momentum ever moves them), and, with
``norm_bound`` > 0, the local model is projected back into the L2 ball of that radius around the global model after
every step (the paper's PGD). Durability, the paper's point, is measured with ``attack.last_round``: the rounds after
it are benign. [C: mask from the previous global update, top-k by magnitude, projection per step; R: ``mask_ratio``
0.05 (the paper varies it); ``norm_bound`` 0 (none) by default]"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..params import Field, params
from ..training import LocalObjective, flat_slices
from .classic import DataPoisoning


class MaskedSteps(LocalObjective):
    """Gradient steps confined to the coordinates where ``mask`` (P,) is False, and (``norm_bound`` > 0) the model
    kept within that L2 distance of where it started."""

    def __init__(self, mask: torch.Tensor | None, norm_bound: float = 0.0):
        self.mask, self.norm_bound = mask, float(norm_bound)

    def begin(self, model: nn.Module) -> None:
        self._slices = flat_slices(model)
        self._start = {n: p.detach().clone() for n, p in model.named_parameters()}
        self._masks = (
            {n: self.mask[s].view_as(self._start[n]).to(self._start[n].device) for n, s in self._slices.items()}
            if self.mask is not None
            else {}
        )

    def gradients(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if p.grad is not None and n in self._masks:
                p.grad.masked_fill_(self._masks[n], 0.0)

    def project(self, model: nn.Module) -> None:
        if self.norm_bound <= 0:
            return
        params = dict(model.named_parameters())
        norm = torch.sqrt(sum(((params[n] - s) ** 2).sum() for n, s in self._start.items()))
        if norm > self.norm_bound:
            for n, s in self._start.items():
                params[n].copy_(s + (params[n] - s) * (self.norm_bound / norm))


class Neurotoxin(DataPoisoning):
    """Classic data poisoning (``attack.boost`` applies) trained off the benign top coordinates, step by step."""

    name = "neurotoxin"

    @params
    class Params:
        mask_ratio: float = Field(0.05, ge=0, lt=1, description="share of coordinates (the benign top ones) masked off")
        norm_bound: float = Field(
            0.0, ge=0, description="L2 radius around the global model each local step is projected into (0: none)"
        )

    def __init__(self, *args, params=None, **kw):
        super().__init__(*args, **kw)
        self.set_params(params)
        self._previous: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: Config, **kw) -> Neurotoxin:
        return super().from_config(cfg, params=cls.params_of(cfg), **kw)

    def begin_round(self, rnd: int, global_state: torch.Tensor) -> None:
        if self._previous is not None and self.mask_ratio > 0:
            change = (global_state - self._previous).abs()
            k = int(self.mask_ratio * len(change))
            self._mask = torch.zeros_like(change, dtype=torch.bool)
            if k:
                self._mask[torch.topk(change, k).indices] = True
        self._previous = global_state.clone()

    def local_objective(self, client_id: int) -> LocalObjective | None:
        if not self.is_malicious(client_id) or (self._mask is None and self.norm_bound <= 0):
            return None
        return MaskedSteps(self._mask, self.norm_bound)


__all__ = ["MaskedSteps", "Neurotoxin"]
