"""Classic (malicious-client) attacks behind one interface; the FM attack lives in ``paper_repro.triggers.poison``
because it acts on the synthetic set, not on clients."""
from __future__ import annotations

from .base import ClientAttack, NoAttack
from .data_poisoning import DataPoisoning

REGISTRY: dict[str, type[ClientAttack]] = {"none": NoAttack, "data": DataPoisoning}


def get(name: str, **params) -> ClientAttack:
    """A client attack by name; unknown names raise with the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown client attack {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**params)


__all__ = ["ClientAttack", "NoAttack", "DataPoisoning", "REGISTRY", "get"]
