"""``both`` — the FM attack and the classic attack at once (a poisoned synthetic set and malicious clients)."""

from __future__ import annotations

from ..config import Config
from .classic import DataPoisoning
from .fm_poisoning import FMPoisoning


class FMAndClassic(DataPoisoning):
    """The classic attack's clients (``DataPoisoning`` arguments), plus ``fm``'s poisoned synthetic set."""

    name = "both"

    def __init__(self, fm: FMPoisoning, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fm = fm

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        DataPoisoning.check_config(cfg)  # both halves must do something
        FMPoisoning.check_config(cfg)

    @classmethod
    def from_config(cls, cfg: Config) -> FMAndClassic:
        c = DataPoisoning.from_config(cfg)
        return cls(
            FMPoisoning.from_config(cfg),
            sorted(c.malicious),
            c.trigger,
            c.target,
            ratio=c.ratio,
            boost=c.boost,
            seed=c.seed,
            mapping=c.mapping,
        )

    def poison_synthetic(self, clean):
        return self.fm.poison_synthetic(clean)
