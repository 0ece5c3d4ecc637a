"""``neurotoxin`` — Zhang et al., "Neurotoxin: durable backdoors in federated learning" (ICML 2022): the attacker
confines its update to coordinates that benign clients rarely change, so that later benign rounds do not overwrite
the backdoor. The benign direction is estimated from the last change of the global model, G_t − G_{t−1}; the top
``mask_ratio`` of its coordinates by magnitude are zeroed in the malicious update. [C: mask from the previous global
update, top-k by magnitude; R: ``mask_ratio`` 0.05 (the paper varies it); the mask is applied to the final local
update instead of projecting every local gradient step (our local-training engines are shared with benign clients);
no norm constraint (PGD) is applied]"""

from __future__ import annotations

import torch

from ..config import Config
from ..params import Field, params
from .classic import DataPoisoning


class Neurotoxin(DataPoisoning):
    """Classic data poisoning (``attack.boost`` applies) with the update masked off the benign top coordinates."""

    name = "neurotoxin"

    @params
    class Params:
        mask_ratio: float = Field(0.05, ge=0, lt=1, description="share of coordinates (the benign top ones) masked off")

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

    def craft_update(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        if self.is_malicious(client_id) and self._mask is not None:
            update = update.masked_fill(self._mask.to(update.device), 0.0)
        return super().craft_update(client_id, update)
