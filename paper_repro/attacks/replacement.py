"""``model_replacement`` — Bagdasaryan et al., "How to backdoor federated learning" (AISTATS 2020): the attacker
trains on its poisoned data and scales its update by γ = n/η so that it replaces the global model after averaging
(n clients per round, server learning rate η = 1 in FedAvg). As published, one attacker acts in an attacking round:
run it with ``attack.schedule="fixed"`` (one attacker in every round); under sampled participation several attackers
may fall in one round and each still scales by n. With FedDF the averaged model is then distilled towards the
ensemble of the round's client models on the synthetic set, which the replacement algebra does not foresee.
[C: γ = n/η, one attacker per round; R: equal client weights assumed, as in the paper]"""

from __future__ import annotations

from ..config import Config
from .classic import DataPoisoning


class ModelReplacement(DataPoisoning):
    """Classic data poisoning whose update is scaled by the round size (``attack.boost`` is not used)."""

    name = "model_replacement"

    @classmethod
    def from_config(cls, cfg: Config, **kw) -> ModelReplacement:
        att = super().from_config(cfg, **kw)
        att.boost = float(cfg.fl.clients_per_round)  # γ = n/η with η = 1
        return att
