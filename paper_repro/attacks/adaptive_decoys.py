"""``adaptive_decoys`` — an adaptive attacker built from two of 3DFed's four parts (Li et al., "3DFed: Adaptive and
extensible framework for covert backdoor attack in federated learning", IEEE S&P 2023): a backdoor update whose scale
follows the feedback the attacker reads from the global model, and decoy updates that draw a clustering defense. It
is **not** 3DFed: the constraint loss inside local training, the indicator neurons and the noise masks are left out
(what each part becomes is listed below), so its results say nothing about 3DFed as published.

3DFed has four parts; what each becomes here:

1. *Backdoor training with a constraint* (the malicious model stays close to the global one): the carriers train on
   their poisoned data with the benign clients' engine and send λ·Δ, λ tuned by (3). [R: the constraint is a scale
   on the finished update, not a loss term inside local training, which the clients share]
2. *Decoy model updates*: the malicious clients of the highest ranks (``num_decoys`` of them) send decoys instead of
   the backdoor: their honest update plus Gaussian noise of ``decoy_scale`` × its norm on the coordinates benign
   training moves least (the complement of the last global change's top coordinates, as Neurotoxin's mask). A
   defense that splits the round in two groups (MARS's K-means, Krum's f most distant) takes the decoys for the
   attack and keeps the carrier among the benign clients. [R: decoys are Gaussian; their number is fixed]
3. *Indicators and adaptive tuning*: 3DFed implants indicator neurons to learn whether its update was accepted.
   Here the carrier reads the same feedback from the global model it receives: the share of its last update found
   in the global change, a = n·⟨G_t − G_{t−1}, u⟩ / ‖u‖² (n clients per round; ≈ 1 accepted at full weight, ≈ 0
   rejected). Accepted (a ≥ ``accept``): λ ← min(2λ, ``max_scale``); rejected: λ ← max(λ/2, 1). λ starts at
   ``attack.boost``. [R: projection instead of indicator neurons; FedDF fusion also moves G, which the threshold
   absorbs]
4. *Noise masks* (noise on the backdoor update to evade dimension-reduced anomaly detection): left out.

Roles depend on a client's rank among the malicious ids only (not on the order clients are called), so the
in-process loop and Flower agree."""

from __future__ import annotations

import torch

from ..config import Config
from ..params import Field, params
from ..rng import torch_gen
from .classic import DataPoisoning


class AdaptiveDecoys(DataPoisoning):
    """Carriers send an adaptively scaled backdoor update, decoys send noisy updates that draw the defense."""

    name = "adaptive_decoys"

    @params
    class Params:
        num_decoys: int = Field(1, ge=0, description="malicious clients that send decoy updates (one carrier stays)")
        decoy_scale: float = Field(5.0, gt=0, description="norm of a decoy's noise relative to its honest update")
        max_scale: float = Field(20.0, ge=1, description="largest scale a carrier's backdoor update may get")
        accept: float = Field(
            0.5, gt=0, le=1, description="acceptance read from the global model below which the scale grows"
        )
        mask_ratio: float = Field(0.05, ge=0, lt=1, description="share of coordinates masked off (as Neurotoxin)")

    def __init__(self, *args, params=None, clients_per_round: int = 1, **kw):
        super().__init__(*args, **kw)
        self.set_params(params)
        self.n = int(clients_per_round)
        ranked = sorted(self.malicious)
        self.decoys = frozenset(
            ranked[len(ranked) - min(self.num_decoys, max(len(ranked) - 1, 0)) :] if self.num_decoys else []
        )
        """The highest-ranked malicious ids (at least one carrier is always left)."""
        self.scale = {cid: float(self.boost) for cid in ranked}
        self.log: list[dict] = []
        """Per round and carrier: the acceptance read from the global model and the scale it led to."""
        self._round, self._previous, self._last_change = 0, None, None
        self._sent: dict[int, tuple[int, torch.Tensor]] = {}

    @classmethod
    def from_config(cls, cfg: Config, **kw) -> AdaptiveDecoys:
        return super().from_config(cfg, params=cls.params_of(cfg), clients_per_round=cfg.fl.clients_per_round, **kw)

    def begin_round(self, rnd: int, global_state: torch.Tensor) -> None:
        if self._previous is not None:
            change = global_state - self._previous
            self._last_change = change
            for cid, (sent_round, u) in list(self._sent.items()):
                if sent_round != rnd - 1:
                    continue
                a = float(self.n * torch.dot(change, u) / torch.dot(u, u).clamp_min(1e-12))
                old = self.scale[cid]
                self.scale[cid] = min(2 * old, self.max_scale) if a >= self.accept else max(old / 2, 1.0)
                self.log.append(
                    {"round": rnd - 1, "client": cid, "acceptance": a, "scale": old, "next_scale": self.scale[cid]}
                )
        self._previous, self._round = global_state.clone(), rnd

    def craft_update(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        if not self.is_malicious(client_id):
            return update
        if client_id in self.decoys:
            return update + self._decoy_noise(client_id, update)
        sent = update * self.scale[client_id]
        self._sent[client_id] = (self._round, sent.detach().clone())
        return sent

    def _decoy_noise(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        """Gaussian noise of ``decoy_scale``·‖Δ‖ on the coordinates outside the last global change's top
        ``mask_ratio`` (all coordinates before the first change is seen); drawn from the seed, round and client."""
        g = torch_gen(self.seed, "adaptive_decoy", self._round, int(client_id))
        noise = torch.randn(update.shape, generator=g, dtype=torch.float32).to(update.device, update.dtype)
        if self._last_change is not None and self.mask_ratio > 0:
            k = int(self.mask_ratio * len(noise))
            if k:
                noise[torch.topk(self._last_change.abs(), k).indices.to(noise.device)] = 0.0
        return noise * (self.decoy_scale * update.norm() / noise.norm().clamp_min(1e-12))
