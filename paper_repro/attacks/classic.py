"""``classic`` — the malicious-client backdoor: local data poisoning with optional update scaling (boosting /
model replacement). [C: all author repositories (20 % of local non-target samples → target); FRJ-AJ ``BD_amp``;
Bagdasaryan et al. 2020]"""

from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..data import ImageSet
from ..rng import legacy_rng, np_rng
from ..triggers import Trigger, poison_indices
from .base import Attack, config_trigger


class DataPoisoning(Attack):
    """Malicious clients trigger a fraction ``ratio`` of their **non-target** samples and relabel them ``target``
    (the poisoned copy is made once per client and kept, like a fixed local data set), then send ``boost``·Δ:
    boost = 1 plain poisoning, 9 = FRJ-AJ's θ_local + 8Δ, K/m = model replacement."""

    name = "classic"

    def __init__(
        self,
        malicious: list[int] | np.ndarray,
        trigger: Trigger,
        target: int,
        ratio: float = 0.2,
        boost: float = 1.0,
        seed: int = 0,
        mapping: str = "all_to_one",
    ):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"client poison ratio {ratio} is outside [0, 1]")
        self.malicious = frozenset(int(m) for m in malicious)
        self.trigger, self.target, self.ratio, self.boost, self.seed = trigger, target, ratio, boost, seed
        self.mapping = mapping
        self._cache: dict[int, tuple[ImageSet, np.ndarray]] = {}

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Refuse a run in which no client would poison anything (its numbers would be those of no attack)."""
        a = cfg.attack
        if a.num_malicious < 1:
            raise ValueError(
                f"attack.kind={a.kind!r} with attack.num_malicious=0: no client is malicious, so nothing is poisoned "
                "and the run would be one without attack; set num_malicious ≥ 1 (or attack.kind='none')"
            )
        if a.client_poison_ratio <= 0:
            raise ValueError(
                f"attack.kind={a.kind!r} with attack.client_poison_ratio=0: the malicious clients poison no sample; "
                "set it above 0 (or attack.kind='none')"
            )

    @classmethod
    def from_config(cls, cfg: Config, **kw) -> DataPoisoning:
        """``attack.num_malicious`` clients drawn once from the seed, poisoning as ``cfg.attack`` says (``kw``:
        a subclass's own arguments)."""
        a = cfg.attack
        malicious = np.sort(np_rng(cfg.seed, "malicious").choice(cfg.fl.num_clients, a.num_malicious, replace=False))
        return cls(
            malicious,
            config_trigger(cfg),
            a.target_class,
            a.client_poison_ratio,
            a.boost,
            seed=cfg.seed,
            mapping=a.mapping,
            **kw,
        )

    def local_data(self, client_id: int, data: ImageSet) -> ImageSet:
        if not self.is_malicious(client_id):
            return data
        if client_id not in self._cache:
            rng = legacy_rng(self.seed, client_id, 7)
            pool = np.flatnonzero(data.y != self.target) if self.mapping == "all_to_one" else np.arange(len(data))
            idx = np.sort(rng.choice(pool, size=int(self.ratio * len(pool)), replace=False))
            self._cache[client_id] = (
                poison_indices(data, self.trigger_for(client_id), self.target, idx, self.mapping),
                idx,
            )
        return self._cache[client_id][0]

    def trigger_for(self, client_id: int) -> Trigger:
        """The trigger malicious client ``client_id`` pastes (the same for all here; DBA splits it)."""
        return self.trigger

    def craft_update(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        return update * self.boost if self.is_malicious(client_id) else update

    def poisoned_indices(self) -> dict[int, np.ndarray]:
        return {cid: idx for cid, (_, idx) in self._cache.items()}
