"""The attack interface: hooks on the server's synthetic set (the FM attack) and on the clients (classic attacks).
Every hook defaults to "no attack", so an attack overrides only the side it acts on."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import Config
from ..data import ImageSet
from ..params import NoParams, build
from ..training import LocalObjective
from ..triggers import Trigger


def config_trigger(cfg: Config) -> Trigger:
    """The trigger a config asks for (the same for the FM and the classic attack, and for the ASR test set)."""
    a = cfg.attack
    return Trigger(a.trigger, a.trigger_size, a.blend_alpha, seed=0, position=a.trigger_position)


class Attack:
    """No attack: the synthetic set stays clean and every client is benign."""

    name = "none"
    Params: type = NoParams
    """Attack-specific knobs (``attack.params``): a :func:`paper_repro.params.params` dataclass, one typed field per
    knob with its default (from the attack's paper), range and description."""
    malicious: frozenset[int] = frozenset()
    """Ids of the malicious clients (ground truth for TPR/FPR; the FL loop never shows it to a defense)."""

    @classmethod
    def from_config(cls, cfg: Config) -> Attack:
        """The attack as ``cfg.attack`` describes it, its randomness drawn from ``cfg.seed``."""
        return cls()

    @classmethod
    def params_of(cls, cfg: Config):
        """This attack's ``Params`` from ``cfg.attack.params``, validated."""
        return build(cls.Params, cfg.attack.params, f"attack {cls.name!r}")

    def set_params(self, params) -> None:
        """Keep ``params`` (None: the defaults) as ``self.params`` and each of its fields as an attribute."""
        self.params = params if params is not None else build(self.Params, {}, f"attack {self.name!r}")
        for key, value in dataclasses.asdict(self.params).items():
            setattr(self, key, value)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Raise ValueError if this attack cannot run with ``cfg`` (called when the config is built)."""

    # --- the foundation model's side
    def poison_synthetic(self, clean: ImageSet) -> tuple[ImageSet, ImageSet, np.ndarray]:
        """(set used to initialise the global model, set used for fusion, indices poisoned); ``clean`` is never
        modified."""
        return clean, clean, np.zeros(0, np.int64)

    # --- the clients' side
    def is_malicious(self, client_id: int) -> bool:
        return int(client_id) in self.malicious

    def local_data(self, client_id: int, data: ImageSet) -> ImageSet:
        """The data client ``client_id`` trains on (a new set for malicious clients; ``data`` is never modified)."""
        return data

    def begin_round(self, rnd: int, global_state: torch.Tensor) -> None:
        """Called at the start of every round with the global model's flat state (P,), before local training: what
        every client (the attacker's among them) receives from the server."""

    def local_objective(self, client_id: int) -> LocalObjective | None:
        """How client ``client_id`` changes its local training steps (a projected gradient, a penalty, a norm
        constraint), called after :meth:`begin_round`; None: it trains as an honest client does, on
        :meth:`local_data`."""
        return None

    def craft_update(self, client_id: int, update: torch.Tensor) -> torch.Tensor:
        """The update the client sends, given its honest update Δ = θ_local − θ_global (P,)."""
        return update

    def asr_trigger(self, cfg: Config) -> Trigger:
        """The trigger the ASR test images carry: the config's (an attack that makes its own trigger, e.g. by
        optimising it on the synthetic set, returns that one). Called after :meth:`poison_synthetic`."""
        return config_trigger(cfg)

    def poisoned_indices(self) -> dict[int, np.ndarray]:
        """Per malicious client, the local indices it poisoned (saved with the run)."""
        return {}
