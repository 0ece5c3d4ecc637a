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
from .classic import DataPoisoning


class Neurotoxin(DataPoisoning):
    """Classic data poisoning (``attack.boost`` applies) with the update masked off the benign top coordinates."""

    name = "neurotoxin"
    PARAMS = {"mask_ratio": 0.05}

    def __init__(self, *args, mask_ratio: float = PARAMS["mask_ratio"], **kw):
        super().__init__(*args, **kw)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio={mask_ratio} must be in [0, 1)")
        self.mask_ratio = mask_ratio
        self._previous: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: Config, **kw) -> Neurotoxin:
        return super().from_config(cfg, **{**cls.PARAMS, **cfg.attack.params}, **kw)  # checked when cfg was built

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
