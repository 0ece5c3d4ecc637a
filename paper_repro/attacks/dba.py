"""``dba`` — Distributed Backdoor Attack (Xie et al., ICLR 2020): the global trigger is split into four local
patterns and each malicious client poisons its data with one of them; the model is tested with the union. [C: four
1×4 bars for MNIST-like images, attacker i uses pattern i mod 4; R: our attackers poison every round they are
sampled (the paper's fixed-frequency schedule is not modelled), update scaled by ``attack.boost``]"""

from __future__ import annotations

from dataclasses import replace

from ..config import Config
from ..triggers import Trigger
from .classic import DataPoisoning


class DBA(DataPoisoning):
    """Malicious client of rank i (in sorted id order) pastes bar i mod 4 of the ``dba`` trigger."""

    name = "dba"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.attack.trigger != "dba":
            raise ValueError(
                f"attack.kind='dba' splits the dba trigger: set attack.trigger='dba' (now {cfg.attack.trigger!r})"
            )

    def trigger_for(self, client_id: int) -> Trigger:
        rank = sorted(self.malicious).index(int(client_id))
        return replace(self.trigger, part=rank % 4)
