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
from .mm_bm import MMBM, MMBMNeuron
from .mmac import MMAC, MMACNeuron
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
    "mm_bm_neuron": MMBMNeuron,
    "mmac_neuron": MMACNeuron,
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
        _check_param(name, k, v, out.get(k), annotations.get(k, ""))
    out.update(params or {})
    return out


def _check_param(defense: str, key: str, value, default, annotation: str) -> None:
    """Reject a parameter value of the wrong kind for its default/annotation: a count must be an int >= 0 (a bool or
    2.5 is not a count), a number finite and >= 0, a name a non-empty string, an optional number (default None)
    None or > 0."""
    def bad(what: str) -> None:
        raise ValueError(f"defense {defense!r}: {key}={value!r} must be {what} (default {default!r})")

    def is_num(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if is_num(value) and not math.isfinite(value):
        bad("a finite number")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            bad("True or False")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad("an integer >= 0")
    elif isinstance(default, float):
        if not is_num(value) or value < 0:
            bad("a number >= 0")
    elif isinstance(default, str):
        many = "list" in annotation and isinstance(value, (list, tuple))
        names = [value] if isinstance(value, str) else value if many else None
        if not names or not all(isinstance(n, str) and n for n in names):
            bad("a non-empty name" + (" or a list of names" if "list" in annotation else ""))
    elif default is None and value is not None:
        if "int" in annotation and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            bad("None (automatic) or an integer >= 1")
        if not is_num(value) or value <= 0:
            bad("None (automatic) or a number > 0")


__all__ = ["resolved_params", "AggregateResult", "Defense", "RoundContext", "REGISTRY", "get", "names", "register"]
