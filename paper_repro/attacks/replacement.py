"""``model_replacement`` — Bagdasaryan et al., "How to backdoor federated learning" (AISTATS 2020): the attacker
trains on its poisoned data and scales its update by γ = n/η so that it replaces the global model after averaging
(n clients per round, server learning rate η = 1 in FedAvg). As published, one attacker acts in an attacking round:
run it with ``attack.schedule="fixed"`` (one attacker in every round); under sampled participation several attackers
may fall in one round and each still scales by n. With FedDF the averaged model is then distilled towards the
ensemble of the round's client models on the synthetic set, which the replacement algebra does not foresee.

**Constrain-and-scale** (the paper's section 4, against anomaly detectors): with ``anomaly_weight`` w > 0 the
attacker trains on L = (1 − w)·L_class + w·L_ano, L_ano = ‖θ − G‖² (the distance a norm-based detector looks at),
and with ``norm_bound`` S > 0 it scales by the largest γ ≤ n/η that keeps ‖γΔ‖ ≤ S (the paper's "scale up to the
bound the defense admits"). Both 0: plain model replacement. [C: γ = n/η, one attacker per round, L_ano as weight
distance; R: equal client weights assumed, as in the paper; S is given, not estimated from benign updates]"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..params import Field, params
from ..training import LocalObjective
from .classic import DataPoisoning


class AnomalyPenalty(LocalObjective):
    """Gradient of (1 − w)·L_class + w·‖θ − θ_start‖²: the class loss's gradient mixed with 2w(θ − θ_start)."""

    def __init__(self, weight: float):
        self.weight = float(weight)

    def begin(self, model: nn.Module) -> None:
        self._start = {n: p.detach().clone() for n, p in model.named_parameters()}

    def gradients(self, model: nn.Module) -> None:
        w = self.weight
        for n, p in model.named_parameters():
            if p.grad is not None:
                p.grad.mul_(1 - w).add_(p.detach() - self._start[n], alpha=2 * w)


class ModelReplacement(DataPoisoning):
    """Classic data poisoning whose update is scaled by the round size (``attack.boost`` is not used), optionally
    constrained (anomaly loss) and capped (norm bound)."""

    name = "model_replacement"

    @params
    class Params:
        anomaly_weight: float = Field(
            0.0, ge=0, lt=1, description="weight w of the anomaly loss ‖θ − G‖² in local training (0: none)"
        )
        norm_bound: float = Field(0.0, ge=0, description="largest L2 norm of the scaled update (0: no cap)")

    def __init__(self, *args, params=None, **kw):
        super().__init__(*args, **kw)
        self.set_params(params)

    @classmethod
    def from_config(cls, cfg: Config, **kw) -> ModelReplacement:
        att = super().from_config(cfg, params=cls.params_of(cfg), **kw)
        att.boost = float(cfg.fl.clients_per_round)  # γ = n/η with η = 1
        return att

    def local_objective(self, client_id: int) -> LocalObjective | None:
        return AnomalyPenalty(self.anomaly_weight) if self.is_malicious(client_id) and self.anomaly_weight else None

    def craft_update(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        if not self.is_malicious(client_id):
            return update
        gamma = self.boost
        if self.norm_bound > 0:
            gamma = min(gamma, self.norm_bound / float(update.norm().clamp_min(1e-12)))
        return update * gamma
