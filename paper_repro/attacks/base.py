"""The client-attack interface: what a malicious client trains on, and what update it sends."""
from __future__ import annotations

import numpy as np
import torch

from ..data import ImageSet


class ClientAttack:
    """Hooks called by the FL loop for every sampled client; benign clients pass through unchanged."""

    malicious: frozenset[int] = frozenset()

    def is_malicious(self, client_id: int) -> bool:
        return int(client_id) in self.malicious

    def local_data(self, client_id: int, data: ImageSet) -> ImageSet:
        """The data the client trains on (a new set for malicious clients; ``data`` is never modified)."""
        return data

    def craft_update(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        """The update the client sends, given its honest update Δ = θ_local − θ_global (P,)."""
        return update

    def poisoned_indices(self) -> dict[int, np.ndarray]:
        """Per malicious client, the local indices it poisoned (saved with the run)."""
        return {}


class NoAttack(ClientAttack):
    """All clients benign."""
