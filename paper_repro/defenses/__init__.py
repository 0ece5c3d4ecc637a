"""Defenses behind one interface, chosen by name: ``get("act_bound", **params)``.

A defense may act at step 3 (``aggregate``: combine/filter client updates) and/or step 5 (``after_fusion``: act on
the fused global model with the synthetic set). Adding one = one file with a :class:`Defense` subclass + one line in
``REGISTRY`` (or :func:`register` from your own code).
"""

from __future__ import annotations

import inspect

from ..registry import Registry, check_param
from .act_bound import ActBound
from .act_bound_dm import ActBoundDM
from .base import AggregateResult, Defense, RoundContext
from .detectors import GeminiGuard, WeiDetect
from .mars import MARS
from .mm_bm import MMBM, MMBMNeuron
from .mmac import MMAC, MMACNeuron
from .pruning import Pruning
from .robust_aggregation import DP, Flame, FoolsGold, Krum, Median, MultiKrum, NormClip, TrimmedMean

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
    },
)
names, register = REGISTRY.names, REGISTRY.register  # known names; add a class under a new name


def get(name: str, **params) -> Defense:
    """A new defense instance; unknown names raise with the known ones, bad parameters with the accepted ones."""
    resolved_params(name, params)  # unknown name or parameter: raises with what is known
    try:
        return REGISTRY[name](**params)
    except TypeError as e:
        raise ValueError(f"bad parameters {params} for defense {name!r}: {e}") from None


def resolved_params(name: str, params: dict | None = None) -> dict:
    """Every constructor parameter of defense ``name``: its defaults with ``params`` applied. Part of a run's cache
    key, so that changing a default re-runs the experiments it affects instead of reusing stale results. A
    constructor that passes ``**kw`` on to its parent's also gets the parent's parameters (its own defaults win)."""
    out: dict = {}
    annotations: dict = {}
    for cls in REGISTRY.lookup(name).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        for k, p in sig.parameters.items():
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                annotations.setdefault(k, str(p.annotation))
                if p.default is not inspect.Parameter.empty:
                    out.setdefault(k, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break  # this constructor takes no more than it names
    unknown = set(params or {}) - set(annotations)
    if unknown:
        raise ValueError(f"bad parameters {sorted(unknown)} for defense {name!r}; accepted: {sorted(out)}")
    for k, v in (params or {}).items():
        check_param(f"defense {name!r}", k, v, out.get(k), annotations.get(k, ""))
    out.update(params or {})
    return out


__all__ = ["resolved_params", "AggregateResult", "Defense", "RoundContext", "REGISTRY", "get", "names", "register"]
