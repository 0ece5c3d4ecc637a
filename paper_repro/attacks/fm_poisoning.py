"""``fm`` — the paper's novel threat: the compromised foundation model's synthetic set carries the trigger. A
fraction of each non-target class is triggered and relabelled to the target, and the poisoned set is used where
``attack.fm_stages`` says (initialisation and/or fusion). [C: 2401.10375; R: applied to the FM's output]"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..data import ImageSet
from ..rng import np_rng
from ..triggers import Trigger, poison
from .base import Attack, config_trigger


class FMPoisoning(Attack):
    """Poison ``ratio`` of each non-target class of the synthetic set (in place of the originals: the set size stays
    the same), for the ``stages`` listed (``init``, ``kd``)."""

    name = "fm"

    def __init__(
        self,
        trigger: Trigger,
        target: int,
        ratio: float = 0.2,
        stages: tuple[str, ...] = ("init", "kd"),
        rng: np.random.Generator | None = None,
        mapping: str = "all_to_one",
    ):
        self.trigger, self.target, self.ratio, self.stages = trigger, target, ratio, tuple(stages)
        self.mapping = mapping
        self.rng = rng if rng is not None else np_rng(0, "fm_poison")

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Refuse a run in which the poisoned synthetic set would reach no model: nothing poisoned, or only stages
        this run never uses (init: fl.init_epochs > 0; kd: fl.fusion with fl.kd_epochs > 0)."""
        a, fl = cfg.attack, cfg.fl
        if a.poison_ratio <= 0:
            raise ValueError(
                f"attack.kind={a.kind!r} with attack.poison_ratio=0 poisons no synthetic image; set it above 0 "
                "(or attack.kind='none')"
            )
        used = {"init"} if fl.init_epochs > 0 else set()
        used |= {"kd"} if fl.fusion and fl.kd_epochs > 0 else set()
        if not used & set(a.fm_stages):
            raise ValueError(
                f"attack.fm_stages={list(a.fm_stages)} poisons only stages this run never uses (fl.init_epochs="
                f"{fl.init_epochs}, fl.fusion={fl.fusion}, fl.kd_epochs={fl.kd_epochs}): the poisoned set would "
                f"reach no model; choose among {sorted(used) or 'none: enable init or fusion'}"
            )

    @classmethod
    def from_config(cls, cfg: Config) -> FMPoisoning:
        a = cfg.attack
        return cls(
            config_trigger(cfg), a.target_class, a.poison_ratio, a.fm_stages, np_rng(cfg.seed, "fm_poison"), a.mapping
        )

    def poison_synthetic(self, clean: ImageSet) -> tuple[ImageSet, ImageSet, np.ndarray]:
        poisoned, idx = poison(clean, self.trigger, self.target, self.ratio, self.rng, self.mapping)
        return (poisoned if "init" in self.stages else clean), (poisoned if "kd" in self.stages else clean), idx
