"""Defenses behind one interface, chosen by name: ``get("act_bound", **params)``.

A defense may act at step 3 (``aggregate``: combine/filter client updates) and/or step 5 (``after_fusion``: act on
the fused global model with the synthetic set). Adding one = one file with a :class:`Defense` subclass + one line in
``REGISTRY`` (or :func:`register` from your own code).
"""

from __future__ import annotations

from ..params import resolved
from ..registry import Registry
from .act_bound import ActBound
from .act_bound_cc import ActBoundClassConditional
from .act_bound_dm import ActBoundDM
from .activation_clustering import ActivationClustering
from .base import AggregateResult, Defense, FusionHooks, LocalTraining, RoundContext, ScreenContext
from .clp import CLP
from .deepsight import DeepSight
from .detectors import GeminiGuard, WeiDetect
from .fltrust import FLTrust
from .mars import MARS
from .mm_bm import MMBM, MMBMNeuron
from .mmac import MMAC, MMACNeuron
from .pruning import Pruning
from .rlr import RLR
from .robust_aggregation import DP, Flame, FoolsGold, Krum, Median, MultiKrum, NormClip, TrimmedMean
from .spectral import SpectralSignatures

DIGEST_ROLE = "registry"  # codehash: see its module docstring

REGISTRY = Registry(
    "defense",
    Defense,
    {
        "none": Defense,
        "norm_clip": NormClip,
        "dp": DP,
        "krum": Krum,
        "multi_krum": MultiKrum,
        "median": Median,
        "trimmed_mean": TrimmedMean,
        "flame": Flame,
        "foolsgold": FoolsGold,
        "mars": MARS,
        "geminiguard": GeminiGuard,
        "weidetect": WeiDetect,
        "pruning": Pruning,
        "mm_bm": MMBM,
        "mmac": MMAC,
        "mm_bm_neuron": MMBMNeuron,
        "mmac_neuron": MMACNeuron,
        "act_bound": ActBound,
        "act_bound_dm": ActBoundDM,
        "act_bound_cc": ActBoundClassConditional,
        "spectral": SpectralSignatures,
        "activation_clustering": ActivationClustering,
        "clp": CLP,
        "rlr": RLR,
        "fltrust": FLTrust,
        "deepsight": DeepSight,
    },
)
names, register = REGISTRY.names, REGISTRY.register  # known names; add a class under a new name


def get(name: str, **params) -> Defense:
    """A new defense instance; unknown names raise with the known ones, bad parameters with what they should be."""
    return REGISTRY.lookup(name)(**params)


def resolved_params(name: str, params: dict | None = None) -> dict:
    """Every parameter of defense ``name`` (its ``Params``): the defaults with ``params`` applied, validated. Part of
    a run's cache key, so that changing a default re-runs the experiments it affects instead of reusing stale
    results."""
    return resolved(REGISTRY.lookup(name).Params, params, f"defense {name!r}")


__all__ = [
    "resolved_params",
    "AggregateResult",
    "Defense",
    "FusionHooks",
    "LocalTraining",
    "RoundContext",
    "ScreenContext",
    "REGISTRY",
    "get",
    "names",
    "register",
]
