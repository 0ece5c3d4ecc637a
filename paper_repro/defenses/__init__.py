"""Defenses behind one interface, chosen by name: ``get("act_bound", **params)``.

A defense may act at step 3 (``aggregate``: combine/filter client updates) and/or step 5 (``after_fusion``: act on
the fused global model with the synthetic set). Adding one = one file with a :class:`Defense` subclass + one line in
``REGISTRY`` (or :func:`register` from your own code).
"""
from __future__ import annotations

import inspect
import math

from ..registry import Registry
from .act_bound import ActBound
from .base import AggregateResult, Defense, RoundContext
from .detectors import GeminiGuard, WeiDetect
from .mars import MARS
from .mm_bm import MMBM
from .mmac import MMAC
from .pruning import Pruning
from .robust_aggregation import DP, Flame, FoolsGold, Krum, Median, MultiKrum, NormClip, TrimmedMean

REGISTRY = Registry("defense", Defense, {
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
    "act_bound": ActBound,
})
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
    key, so that changing a default re-runs the experiments it affects instead of reusing stale results."""
    sig = inspect.signature(REGISTRY.lookup(name).__init__)
    out = {k: p.default for k, p in sig.parameters.items()
           if k != "self" and p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}
    unknown = set(params or {}) - set(sig.parameters)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        raise ValueError(f"bad parameters {sorted(unknown)} for defense {name!r}; accepted: {sorted(out)}")
    for k, v in (params or {}).items():
        default = out.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"defense {name!r}: {k}={v} must be a finite number")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and v is not None \
                and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"defense {name!r}: {k}={v!r} must be a number like its default {default!r}")
    out.update(params or {})
    return out


__all__ = ["resolved_params", "AggregateResult", "Defense", "RoundContext", "REGISTRY", "get", "names", "register"]
