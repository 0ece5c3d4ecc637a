"""F6's ablations under the FM attack: one knob varied at a time, the rest as in the profile; every run is an
ordinary cached experiment, so the profile-default points are shared with the defense grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import defenses
from ..options import RunOptions
from ..profiles import load_config
from ..runner import run_many


@dataclass(frozen=True)
class Ablation:
    name: str
    label: str
    """x-axis label."""
    values: tuple
    overrides: Callable[[object], dict]
    """value → keyword overrides for :func:`load_config` (the attack is always the FM attack)."""
    defenses: tuple[str, ...] = ("none", "act_bound")


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation(
            "poison_ratio",
            "share of synthetic images poisoned by the FM",
            (0.05, 0.1, 0.2, 0.4),
            lambda v: {"attack": {"kind": "fm", "poison_ratio": v}},
        ),
        Ablation(
            "dirichlet_beta",
            "client data: Dirichlet β (∞ = IID)",
            (0.1, 0.5, 1.0, "∞"),
            lambda v: {
                "attack": {"kind": "fm"},
                "data": {"partition": "iid"} if v == "∞" else {"partition": "dirichlet", "beta": v},
            },
        ),
        Ablation(
            "synthetic_size",
            "synthetic images per class",
            (50, 100, 200),
            lambda v: {"attack": {"kind": "fm"}, "fm": {"n_per_class": v}},
        ),
        Ablation(
            "bounded_layers",
            "act_bound: bounded layers",
            ("last", "hidden", "all"),
            lambda v: {"attack": {"kind": "fm"}, "defense": {"name": "act_bound", "params": {"sites": v}}},
            defenses=("act_bound",),
        ),
        Ablation(
            "penalty_weight",
            "act_bound: bound-norm penalty weight c₀",
            (0.0, 0.05, 0.5),
            lambda v: {"attack": {"kind": "fm"}, "defense": {"name": "act_bound", "params": {"c0": v}}},
            defenses=("act_bound",),
        ),
    )
}


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in extra.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def ablation_config(profile: str, a: Ablation, value, defense: str, seed: int):
    """The config of one ablation point."""
    kw = _merge({"defense": {"name": defense}}, a.overrides(value))
    # a parameter at its default is left out, so that the point shares its cached run with the defense grid
    defaults = defenses.resolved_params(defense)
    kw["defense"]["params"] = {k: x for k, x in kw["defense"].get("params", {}).items() if defaults.get(k) != x}
    return load_config(profile, seed=seed, **kw)


def run_ablations(
    profile: str = "quick",
    names: list[str] | None = None,
    seeds: tuple[int, ...] = (0,),
    results_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
) -> pd.DataFrame:
    """Run (or load from cache) every point of the chosen ablations; one tidy row per run."""
    unknown = set(names or []) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablations {sorted(unknown)}; known: {sorted(ABLATIONS)}")
    points = [
        (a, v, d, s)
        for a in (ABLATIONS[n] for n in (names or ABLATIONS))
        for v in a.values
        for d in a.defenses
        for s in seeds
    ]
    cfgs = [ablation_config(profile, a, v, d, s) for a, v, d, s in points]
    results = run_many(cfgs, results_dir, progress=progress, desc="ablations", options=options)
    return pd.DataFrame(
        [
            {
                "ablation": a.name,
                "label": a.label,
                "value": v,
                "defense": d,
                "seed": s,
                "acc": res.final["acc"],
                "asr": res.final["asr"],
                "run": res.run_dir.name,
            }
            for (a, v, d, s), res in zip(points, results)
        ]
    )
