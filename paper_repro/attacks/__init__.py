"""Attacks behind one interface, chosen by ``attack.kind``: ``build(cfg)``.

An attack acts on the server's synthetic set (``poison_synthetic``: the FM attack) and/or on the clients
(``local_data``, ``craft_update``: classic attacks). Adding one = one file with an :class:`Attack` subclass + one
line in ``REGISTRY`` (or :func:`register` from your own code).
"""
from __future__ import annotations

from ..config import Config
from .base import Attack, config_trigger
from .both import FMAndClassic
from .classic import DataPoisoning
from .fm_poisoning import FMPoisoning

REGISTRY: dict[str, type[Attack]] = {
    "none": Attack,
    "classic": DataPoisoning,
    "fm": FMPoisoning,
    "both": FMAndClassic,
}


def names() -> list[str]:
    """Known attack names (``attack.kind``)."""
    return sorted(REGISTRY)


def register(name: str, cls: type[Attack]) -> type[Attack]:
    """Add an attack under ``name`` (usable as ``attack.kind``); returns ``cls``, so it works as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise TypeError(f"{cls!r} is not a subclass of paper_repro.attacks.Attack")
    REGISTRY[name] = cls
    return cls


def build(cfg: Config) -> Attack:
    """The attack ``cfg.attack.kind`` names, built from the config; unknown names raise with the known ones."""
    if cfg.attack.kind not in REGISTRY:
        raise ValueError(f"unknown attack {cfg.attack.kind!r}; known attacks: {names()}")
    return REGISTRY[cfg.attack.kind].from_config(cfg)


__all__ = ["Attack", "DataPoisoning", "FMPoisoning", "FMAndClassic", "REGISTRY", "build", "config_trigger",
           "names", "register"]
