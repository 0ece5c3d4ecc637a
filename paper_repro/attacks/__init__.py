"""Attacks behind one interface, chosen by ``attack.kind``: ``build(cfg)``.

An attack acts on the server's synthetic set (``poison_synthetic``: the FM attack) and/or on the clients
(``local_data``, ``craft_update``: classic attacks). Adding one = one file with an :class:`Attack` subclass + one
line in ``REGISTRY`` (or :func:`register` from your own code).
"""

from __future__ import annotations

from ..config import Config
from ..params import resolved
from ..registry import Registry
from .adaptive_decoys import AdaptiveDecoys
from .base import Attack, config_trigger
from .both import FMAndClassic
from .classic import DataPoisoning
from .dba import DBA
from .fm_bound_aware import FMBoundAware
from .fm_clean_label import FMCleanLabel
from .fm_generated import FMGenerated
from .fm_poisoning import FMPoisoning
from .neurotoxin import Neurotoxin
from .replacement import ModelReplacement

DIGEST_ROLE = "registry"  # codehash: see its module docstring

REGISTRY = Registry(
    "attack",
    Attack,
    {
        "none": Attack,
        "classic": DataPoisoning,
        "fm": FMPoisoning,
        "both": FMAndClassic,
        "model_replacement": ModelReplacement,
        "dba": DBA,
        "neurotoxin": Neurotoxin,
        "adaptive_decoys": AdaptiveDecoys,
        "fm_generated": FMGenerated,
        "fm_bound_aware": FMBoundAware,
        "fm_clean_label": FMCleanLabel,
    },
)
names, register = REGISTRY.names, REGISTRY.register  # known names; add a class under a new name


def resolved_params(name: str, params: dict | None = None) -> dict:
    """Attack ``name``'s parameters (its ``Params``, the ``attack.params`` of a config): the defaults with ``params``
    applied, validated; unknown keys and values out of range raise."""
    return resolved(REGISTRY.lookup(name).Params, params, f"attack {name!r}")


def build(cfg: Config) -> Attack:
    """The attack ``cfg.attack.kind`` names, built from the config; unknown names raise with the known ones."""
    return REGISTRY.lookup(cfg.attack.kind).from_config(cfg)


__all__ = [
    "Attack",
    "DataPoisoning",
    "FMPoisoning",
    "FMCleanLabel",
    "FMAndClassic",
    "REGISTRY",
    "build",
    "config_trigger",
    "names",
    "register",
]
