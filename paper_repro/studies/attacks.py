"""Attack studies: every attack against the main defenses (the attack-breadth table), and what an FM attacker must do
to make its backdoor strong (the strength sweep: poison share and trigger strength), measured with and without
``act_bound``.

``python -m paper_repro attacks`` writes ``data/tables/attack_breadth_<profile>.csv``;
``python -m paper_repro attacks --study strength`` writes ``attack_strength_<profile>.csv`` (one row per run, with
the run folder). Both use the held-out seeds and the validation setting's data (Dirichlet 0.5); no attack or
defense parameter was chosen on them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import summarise
from ..options import RunOptions
from ..runner import run_many
from ..tables import best_defense, seed_intervals, table_path
from .heldout import HELDOUT_SEEDS, attack_config, save_run_table

SIG_AMPLITUDE = round(20 / 255, 4)
ATTACKS: dict[str, dict] = {
    # the compromised FM (the synthetic set)
    "FM patch": {"kind": "fm"},
    "FM random patch": {"kind": "fm", "trigger": "random_patch"},
    "FM SIG": {"kind": "fm", "trigger": "sig", "blend_alpha": SIG_AMPLITUDE},
    "FM all-to-all": {"kind": "fm", "mapping": "all_to_all"},
    "FM-generated patch": {"kind": "fm_generated"},
    "FM bound-aware": {"kind": "fm_bound_aware"},
    # malicious clients
    "data poisoning": {"kind": "classic"},
    "model replacement": {"kind": "model_replacement"},
    "DBA": {"kind": "dba", "trigger": "dba"},
    "Neurotoxin": {"kind": "neurotoxin"},
    "adaptive decoys (3DFed-style)": {"kind": "adaptive_decoys"},
}
"""Label → ``attack`` section. Every attack at its paper's parameters (see its file) and the profile's poison
shares; the client attacks use the profile's malicious clients and boost."""
DEFENSES = ("none", "median", "flame", "mars", "mm_bm", "act_bound")

STRENGTH: dict[str, list[tuple[str, dict]]] = {
    "poison share": [(f"{r:g}", {"poison_ratio": r}) for r in (0.05, 0.1, 0.2, 0.4)],
    "patch side (px)": [(f"{s}", {"trigger_size": s}) for s in (1, 2, 3, 5)],
    "SIG amplitude": [(f"{a:g}", {"trigger": "sig", "blend_alpha": a}) for a in (0.04, SIG_AMPLITUDE, 0.16, 0.3)],
}
"""The strength sweep: one knob at a time against the FM patch attack (3×3 corner patch, 20 % of each non-target
class), values fixed before any was run (a blend-weight knob was dropped, unrun, to fit the compute)."""


def _run_table(
    cells: list[tuple[dict, dict, str, int]],
    profile: str,
    table: str,
    results_dir,
    tables_dir,
    progress: bool,
    options: RunOptions | None,
    desc: str,
) -> pd.DataFrame:
    """Run ``cells`` (row labels, attack section, defense, seed), one row per run, written to ``<table>_<profile>``
    with its provenance."""
    cfgs = [attack_config(profile, attack, d, seed) for _, attack, d, seed in cells]
    results = run_many(cfgs, results_dir, progress=progress, desc=desc, options=options)
    df = pd.DataFrame(
        [
            {
                **labels,
                "kind": attack["kind"],
                "defense": d,
                "seed": seed,
                **summarise(r.history),
                "run": r.run_dir.name,
            }
            for (labels, attack, d, seed), r in zip(cells, results)
        ]
    )
    return save_run_table(df, table, profile, tables_dir, results_dir)


def attack_breadth(
    profile: str = "quick",
    attacks: tuple[str, ...] = tuple(ATTACKS),
    defense_names: tuple[str, ...] = DEFENSES,
    seeds: tuple[int, ...] = HELDOUT_SEEDS[:3],
    results_dir: str | Path | None = None,
    tables_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
    table: str = "attack_breadth",
) -> pd.DataFrame:
    """Every attack × defense × seed, seed by seed (a partial run leaves whole seeds in the run folders)."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {list(ATTACKS)}")
    cells = [({"attack": a}, ATTACKS[a], d, s) for s, a, d in itertools.product(seeds, attacks, defense_names)]
    return _run_table(cells, profile, table, results_dir, tables_dir, progress, options, "attacks")


def attack_strength(
    profile: str = "quick",
    knobs: tuple[str, ...] = tuple(STRENGTH),
    defense_names: tuple[str, ...] = ("none", "act_bound"),
    seeds: tuple[int, ...] = HELDOUT_SEEDS[:1],
    results_dir: str | Path | None = None,
    tables_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
    table: str = "attack_strength",
) -> pd.DataFrame:
    """The FM patch attack with one knob of :data:`STRENGTH` changed at a time, per defense and seed."""
    unknown = [k for k in knobs if k not in STRENGTH]
    if unknown:
        raise ValueError(f"unknown strength knobs {unknown}; known: {list(STRENGTH)}")
    cells = [
        ({"knob": k, "value": v}, {"kind": "fm", **change}, d, s)
        for s, k in itertools.product(seeds, knobs)
        for v, change in STRENGTH[k]
        for d in defense_names
    ]
    return _run_table(cells, profile, table, results_dir, tables_dir, progress, options, "strength")


def breadth_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % interval per attack × defense (:func:`paper_repro.tables.seed_intervals`)."""
    return seed_intervals(df, by=("attack", "defense"))


def strength_threshold(df: pd.DataFrame, level: float = 0.9) -> pd.DataFrame:
    """Per knob and defense: the weakest value at which the mean ASR reaches ``level`` (NaN-free rows only; None if
    no value does), in the sweep's order."""
    rows = []
    for (knob, d), g in df.groupby(["knob", "defense"], sort=False):
        order = [v for v, _ in STRENGTH[knob]]
        mean = g.groupby(g["value"].astype(str))["asr"].mean().reindex(order)
        hit = next((v for v, a in mean.items() if a >= level), None)
        rows.append(
            {
                "knob": knob,
                "defense": d,
                f"ASR ≥ {level:g} from": hit or "never",
                "mean ASR per value": "  ".join(f"{v}: {a:.2f}" for v, a in mean.items()),
            }
        )
    return pd.DataFrame(rows)


def trigger_examples(
    profile: str = "quick",
    attacks: tuple[str, ...] = tuple(ATTACKS),
    n: int = 4,
    seed: int = HELDOUT_SEEDS[0],
    path: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """What every attack plants: per attack label, ``n`` poisoned training images as the attack makes them (from the
    synthetic set for FM attacks, from the first malicious client's data for client attacks) and ``n`` triggered
    test images; saved to ``path`` (``attack_triggers_<profile>.npz``, read by :func:`paper_repro.plots.
    trigger_gallery`) as ``<label>/train`` and ``<label>/test`` uint8 arrays (n, C, H, W)."""
    from ..inputs import prepare

    out: dict[str, np.ndarray] = {}
    for label in attacks:
        prep = prepare(attack_config(profile, ATTACKS[label], "none", seed), progress=False)
        inp, attack = prep.inputs, prep.inputs.attack
        if len(prep.fm_poisoned):
            train = inp.synthetic_kd.x[prep.fm_poisoned]
        else:
            cid = int(prep.malicious[0])
            local = attack.local_data(cid, inp.clients[cid])
            train = local.x[attack.poisoned_indices()[cid]]
        rng = np.random.default_rng(0)
        out[f"{label}/train"] = train[np.sort(rng.choice(len(train), min(n, len(train)), replace=False))]
        out[f"{label}/test"] = inp.asr_test.x[:n]
    path = Path(path) if path else table_path("attack_triggers", profile, suffix="npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def breadth_pivot(
    df: pd.DataFrame, stat: str = "mean", metrics: tuple[str, ...] = ("acc", "asr"), order=None
) -> pd.DataFrame:
    """One row per defense (in :data:`DEFENSES` order), one column per (metric, attack) (in ``order``, default
    :data:`ATTACKS`'s; others after it, sorted), ``stat`` over seeds: the input of
    :func:`paper_repro.plots.defense_heatmap`."""
    wide = df.groupby(["defense", "attack"])[list(metrics)].agg(stat).unstack("attack")
    order = list(ATTACKS) if order is None else list(order)
    attacks = [a for a in order if a in set(df["attack"])] + sorted(set(df["attack"]) - set(order))
    defenses = [d for d in DEFENSES if d in wide.index] + sorted(set(wide.index) - set(DEFENSES))
    return wide.reindex(columns=attacks, level=1).reindex(defenses)


def strength_for_plot(df: pd.DataFrame) -> pd.DataFrame:
    """The strength table in the layout of :func:`paper_repro.plots.ablation` (one panel per knob)."""
    return df.assign(ablation=df["knob"], label=df["knob"], value=df["value"].astype(str))


ADAPTIVE: dict[str, str] = {
    "FM bound-aware": "knows the bounding procedure: trigger optimised under the bounds it predicts",
    "FM all-to-all": "class allocation: poisoned images carry every label, so the class-balanced fitting set "
    "no longer caps them at one label's slots",
    "FM SIG": "full-image low-amplitude trigger: no unit needs to fire far above its clean range",
    "FM-generated patch": "the FM draws the trigger into the target class (no paste)",
    "adaptive decoys (3DFed-style)": "decoys draw the update-comparing defenses; scale adapted to acceptance",
}
"""The attacks of the breadth table that adapt to a defense, with what each exploits."""


def adaptive_table(breadth: pd.DataFrame, strength: pd.DataFrame | None = None) -> pd.DataFrame:
    """How far each adaptive attack gets against ``act_bound`` (and the best other defense), from the per-run
    breadth table; with ``strength``, also the FM patch at the largest poison share (the attacker outnumbering the
    bounds' quantile), marked with its number of seeds."""
    s = seed_intervals(breadth, by=("attack", "defense")).set_index(["attack", "defense"])
    rows = []

    def row(label: str, how: str, cell: pd.DataFrame) -> dict:  # cell: intervals indexed by defense
        out = {"attack": label, "how": how}
        for d in ("none", "act_bound"):
            if d in cell.index:
                r = cell.loc[d]
                out |= {
                    f"{d}_asr": r["asr_mean"],
                    f"{d}_lo": r["asr_lo"],
                    f"{d}_hi": r["asr_hi"],
                    f"{d}_acc": r["acc_mean"],
                    "n": int(r["n"]),
                }
        return out

    for label, how in ADAPTIVE.items():
        if label in s.index.get_level_values(0):
            rows.append(row(label, how, s.loc[label]))
    if strength is not None:
        share = strength[strength["knob"] == "poison share"]
        top = max(share["value"].astype(float))
        sub = share[share["value"].astype(float) == top].assign(attack=f"FM patch, poison share {top:g}")
        t = seed_intervals(sub, by=("attack", "defense")).set_index("defense")
        rows.append(
            row(f"FM patch, poison share {top:g}", "more poisoned images than the bounds' quantile leaves out", t)
        )
    return pd.DataFrame(rows)


def run_study(
    study: str,
    profile: str,
    attacks: list[str] | None,
    defense_names: list[str] | None,
    seeds: list[int] | None,
    budget_minutes: float,
    tables_dir: str | Path | None,
    options: RunOptions | None,
) -> str:
    """``python -m paper_repro attacks --study STUDY``: run (or, for ``adaptive``, derive) the study's table and
    return its summary as text; None arguments take the study's defaults."""
    if study == "breadth":
        df = attack_breadth(
            profile,
            tuple(attacks or ATTACKS),
            tuple(defense_names or DEFENSES),
            tuple(seeds or HELDOUT_SEEDS[:3]),
            tables_dir=tables_dir,
            options=options,
        )
        return best_defense(df).round(3).to_string(index=False)
    if study == "strength":
        df = attack_strength(
            profile,
            defense_names=tuple(defense_names or ("none", "act_bound")),
            seeds=tuple(seeds or HELDOUT_SEEDS[:1]),
            tables_dir=tables_dir,
            options=options,
        )
        return strength_threshold(df).to_string(index=False)
    if study == "calibration":
        from .calibration import VALIDATION_SEEDS, calibrate, verdicts

        seeds = tuple(seeds or VALIDATION_SEEDS)
        df = calibrate(
            profile, tuple(attacks) if attacks else None, seeds, budget_minutes, None, tables_dir, options=options
        )
        return verdicts(df, seeds).round(3).to_string(index=False)
    if study in ("calibrated", "clients"):
        from . import calibrated as cal

        kw = dict(seeds=tuple(seeds or HELDOUT_SEEDS), budget_minutes=budget_minutes, tables_dir=tables_dir)
        if study == "clients":
            return cal.client_verdicts(cal.client_studies(profile, options=options, **kw)).round(4).to_string()
        kw["defense_names"] = tuple(defense_names or ("none",))
        df = cal.calibrated_heldout(profile, tuple(attacks) if attacks else None, options=options, **kw)
        by, metrics = ("attack", "rung", "verdict", "defense"), ("asr", "asr_round0", "acc", "attackers_mean")
        return seed_intervals(df, by=by, metrics=metrics).round(3).to_string(index=False)
    from ..tables import read_table, write_csv

    df = adaptive_table(
        read_table("attack_breadth", profile, tables_dir), read_table("attack_strength", profile, tables_dir)
    )
    write_csv(df, table_path("attack_adaptive", profile, tables_dir), "%.5g")
    return df.drop(columns="how").round(3).to_string(index=False)
