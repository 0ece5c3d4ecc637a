"""Attacks behind one interface, chosen by ``attack.kind``: ``build(cfg)``.

An attack acts on the server's synthetic set (``poison_synthetic``: the FM attack) and/or on the clients
(``local_data``, ``craft_update``: classic attacks). Adding one = one file with an :class:`Attack` subclass + one
line in ``REGISTRY`` (or :func:`register` from your own code).
"""
from __future__ import annotations

from ..config import Config
from ..registry import Registry
from .base import Attack, config_trigger
from .both import FMAndClassic
from .classic import DataPoisoning
from .fm_poisoning import FMPoisoning

REGISTRY = Registry("attack", Attack, {
    "none": Attack,
    "classic": DataPoisoning,
    "fm": FMPoisoning,
    "both": FMAndClassic,
})
names, register = REGISTRY.names, REGISTRY.register  # known names; add a class under a new name


def build(cfg: Config) -> Attack:
    """The attack ``cfg.attack.kind`` names, built from the config; unknown names raise with the known ones."""
    return REGISTRY.lookup(cfg.attack.kind).from_config(cfg)


__all__ = ["Attack", "DataPoisoning", "FMPoisoning", "FMAndClassic", "REGISTRY", "build", "config_trigger",
           "names", "register"]
