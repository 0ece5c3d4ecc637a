"""Attack calibration (docs/protocol.md, "Calibrating the attacks"): before any defense is judged against an attack,
the attack's strength is raised along a ladder fixed in advance until it works without defense.

Rule, written before the runs: on the validation setting's data (Dirichlet 0.5) and the validation seeds 0, 1, 2,
without defense, walk each attack's ladder from its first rung; the attack is **calibrated** at the first rung whose
mean final ASR over the seeds is ≥ :data:`TARGET_ASR`; an attack whose last rung (its stealth limit) stays below is
**weak**: it is reported at its last rung and kept out of any claim that a defense fails against it. Rungs change one
knob at a time and never pass the stealth limits in :data:`LIMITS`. The rung chosen is then frozen for the held-out
seeds. Every row also reports the round-0 ASR (after initialisation on the poisoned synthetic set: where an FM attack
enters).

``python -m paper_repro attacks --study calibration --budget 60`` runs as many rungs as the budget allows (resumable:
finished runs are served from the run folders or the ledger) and writes ``attack_calibration_<profile>.csv``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..metrics import summarise
from ..options import RunOptions
from .heldout import VALIDATION_SEEDS, attack_config, save_run_table

TARGET_ASR = 0.80
"""Mean final no-defense ASR over the validation seeds at which an attack counts as working."""
LIMITS = {
    "patch side (px)": 5,
    "poisoned share of a class": 0.4,
    "full-image trigger L∞ (of 255)": 40,
    "FM fine-tuning steps": 2400,
    "client update boost": 10,
}
"""Stealth limits no rung passes: a 5-px patch covers 3.2 % of a 28×28 image; 40/255 is twice SIG's paper amplitude
and 2.5× the 16/255 of universal-perturbation attacks; a clean-label attack may trigger every target image; a client's
update scaled beyond 10× stands out from the round's benign norms by that factor."""


def _a(x: int) -> float:
    return round(x / 255, 4)


def _one_per_round(kind: str) -> dict:
    """A client attack's section with one attacker in every round (its trigger: the patch; DBA: its bars)."""
    return {
        "kind": kind,
        "schedule": "fixed",
        "attackers_per_round": 1,
        "boost": 1.0,
        **({"trigger": "dba"} if kind == "dba" else {}),
    }


@dataclass(frozen=True)
class Rung:
    label: str
    attack: dict
    """The ``attack`` section of the run (kind and the knobs this rung sets)."""
    linf: int
    """L∞ of the trigger in pixel units (of 255): a patch's is 255, a full-image trigger's is its amplitude."""


LADDERS: dict[str, list[Rung]] = {
    "FM patch": [Rung(f"share {r:g}", {"kind": "fm", "poison_ratio": r}, 255) for r in (0.2, 0.3, 0.4)],
    "FM random patch": [
        Rung("share 0.2", {"kind": "fm", "trigger": "random_patch"}, 255),
        Rung("share 0.4", {"kind": "fm", "trigger": "random_patch", "poison_ratio": 0.4}, 255),
        *(
            Rung(
                f"share 0.4, side {s}",
                {"kind": "fm", "trigger": "random_patch", "poison_ratio": 0.4, "trigger_size": s},
                255,
            )
            for s in (4, 5)
        ),
    ],
    "FM SIG (clean label)": [
        *(
            Rung(
                f"Δ 20, target share {r:g}",
                {"kind": "fm_clean_label", "trigger": "sig", "blend_alpha": _a(20), "poison_ratio": r},
                20,
            )
            for r in (0.3, 1.0)
        ),
        *(
            Rung(
                f"Δ {d}, target share 1",
                {"kind": "fm_clean_label", "trigger": "sig", "blend_alpha": _a(d), "poison_ratio": 1.0},
                d,
            )
            for d in (30, 40)
        ),
    ],
    "FM SIG (dirty label)": [
        Rung(f"Δ {d}", {"kind": "fm", "trigger": "sig", "blend_alpha": _a(d)}, d) for d in (20, 30, 40)
    ],
    "FM all-to-all": [
        Rung(f"share {r:g}", {"kind": "fm", "mapping": "all_to_all", "poison_ratio": r}, 255) for r in (0.2, 0.3, 0.4)
    ],
    "FM-generated patch": [
        Rung(f"{n} steps", {"kind": "fm_generated", "params": {"finetune_steps": n}}, 255) for n in (600, 1200, 2400)
    ],
    "FM bound-aware": [
        Rung(f"ε {e}", {"kind": "fm_bound_aware", "params": {"epsilon": _a(e)}}, e) for e in (16, 24, 32)
    ],
    **{
        name: [
            *(
                Rung(f"1 per round, share {r:g}, boost 1", {**_one_per_round(kind), "client_poison_ratio": r}, 255)
                for r in (0.5, 1.0)
            ),
            *(
                Rung(
                    f"1 per round, share 1, boost {b:g}",
                    {**_one_per_round(kind), "client_poison_ratio": 1.0, "boost": b},
                    255,
                )
                for b in (5.0, 10.0)
            ),
        ]
        for name, kind in (("classic", "classic"), ("DBA", "dba"), ("Neurotoxin", "neurotoxin"))
    },
    "model replacement": [
        Rung(f"1 per round, share {r:g}, γ = n", {**_one_per_round("model_replacement"), "client_poison_ratio": r}, 255)
        for r in (0.5, 1.0)
    ],
    "model replacement (constrain-and-scale)": [
        Rung(
            f"1 per round, share {r:g}, γ = n, anomaly weight 0.3",
            {
                **_one_per_round("model_replacement"),
                "client_poison_ratio": r,
                "params": {"anomaly_weight": 0.3},
            },
            255,
        )
        for r in (0.5, 1.0)
    ],
    "adaptive decoys": [
        Rung(
            f"2 per round, share 1, scale from {b:g} up to 10",
            {
                **_one_per_round("adaptive_decoys"),
                "attackers_per_round": 2,
                "client_poison_ratio": 1.0,
                "boost": b,
                "params": {"max_scale": 10.0},
            },
            255,
        )
        for b in (1.0, 5.0)
    ],
}
"""Per attack, its ladder: rungs in the order they are tried, fixed before any was run. Client attacks run with the
fixed attacker schedule, one attacker in every round (docs/protocol.md): poisoned share of the attacker's data
0.5 → 1 at boost 1, then boost 5 → 10 (the stealth limit on update scale); model replacement on its own published
scale γ = n/η (``attack.boost`` unused), share 0.5 → 1; its constrain-and-scale variant the same with Bagdasaryan et
al.'s anomaly-loss weight 1 − α = 0.3 (no norm cap: the server's bound is unknown to it). Neurotoxin climbs the
classic ladder with its mask at 5 % (the paper's middle setting). Adaptive decoys need a carrier and a decoy in a
round: two attackers per round, every sample poisoned, the adaptive scale starting at 1 → 5 and capped at the
stealth limit 10 (the default cap of 20 passes it)."""


def rung(attack: str, label: str) -> Rung:
    for r in LADDERS[attack]:
        if r.label == label:
            return r
    raise KeyError(f"{attack!r} has no rung {label!r} (known: {[r.label for r in LADDERS[attack]]})")


def calibration_config(profile: str, attack: str, label: str, seed: int):
    """One cell: the validation data, the rung's attack, no defense."""
    return attack_config(profile, dict(rung(attack, label).attack), "none", seed)


def calibration_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    r = rung(str(labels["attack"]), str(labels["rung"]))
    return [
        {
            "attack": labels["attack"],
            "rung": labels["rung"],
            "step": LADDERS[str(labels["attack"])].index(r),
            "kind": r.attack["kind"],
            "linf": r.linf,
            "seed": labels["seed"],
            **summarise(history),
            "run": run,
        }
    ]


def verdicts(df: pd.DataFrame, seeds: tuple[int, ...] = VALIDATION_SEEDS) -> pd.DataFrame:
    """Per attack: the rungs run (mean over ``seeds`` of final ASR, round-0 ASR and ACC) and the verdict of the rule:
    ``calibrated`` at the first rung with mean ASR ≥ :data:`TARGET_ASR`, ``weak`` when every rung was run and none
    reached it, ``undecided`` while rungs remain (a rung counts as run when all its seeds are)."""
    if df.empty:
        df = pd.DataFrame(columns=["attack", "rung", "seed", "asr", "asr_round0", "acc", "status"])
    out = []
    for attack, ladder in LADDERS.items():
        mine = df[df["attack"] == attack]
        verdict, chosen = "undecided", None
        for step, r in enumerate(ladder):
            cell = mine[(mine["rung"] == r.label) & mine["seed"].isin(seeds)]
            if cell["seed"].nunique() < len(seeds):
                break
            ok = cell[cell["status"].fillna("ok").eq("ok")]
            row = {
                "attack": attack,
                "step": step,
                "rung": r.label,
                "asr": ok["asr"].mean(),
                "asr_min": ok["asr"].min(),
                "asr_round0": ok["asr_round0"].mean(),
                "acc": ok["acc"].mean(),
                "n": len(ok),
            }
            out.append(row)
            if row["asr"] >= TARGET_ASR:
                verdict, chosen = "calibrated", r.label
                break
        else:
            verdict, chosen = "weak", ladder[-1].label
        for row in out:
            if row["attack"] == attack:
                row["verdict"], row["chosen"] = verdict, chosen
        if not any(row["attack"] == attack for row in out):
            out.append({"attack": attack, "verdict": "undecided", "chosen": None})
    return pd.DataFrame(out)


def next_rungs(df: pd.DataFrame, seeds: tuple[int, ...] = VALIDATION_SEEDS) -> list[tuple[str, str]]:
    """(attack, rung) to run next: for each undecided attack, the first rung that lacks a seed."""
    v = verdicts(df, seeds)
    todo = []
    for attack, ladder in LADDERS.items():
        if (v.loc[v["attack"] == attack, "verdict"] != "undecided").any():
            continue
        done = set(v.loc[(v["attack"] == attack) & v["rung"].notna(), "rung"]) if "rung" in v else set()
        todo += [(attack, r.label) for r in ladder if r.label not in done][:1]
    return todo


def _kept_rows(have: pd.DataFrame, profile: str, results_dir, options, log) -> list[dict]:
    """The committed table's rows, each derived again from its run as the current code keys it, never copied: a run
    the results folder or the ledger holds is served (instant; on a new machine this also puts the ledger's runs in
    ``results_dir`` for the table's provenance); a row whose run was made by other code (or is off the ladders now)
    is dropped, said in ``log``, and the walk makes its rung again when it reaches it."""
    from ..runner import plan_run, served

    rows, stale = [], []
    for rec in have.to_dict("records"):
        attack, label, seed = str(rec["attack"]), str(rec["rung"]), int(rec["seed"])
        if attack not in LADDERS or label not in {r.label for r in LADDERS[attack]}:
            stale.append(f"{attack} at {label} (off the ladders)")
            continue
        res = served(plan_run(calibration_config(profile, attack, label, seed), results_dir, options))
        if res is None:
            stale.append(f"{attack} at {label}, seed {seed}")
            continue
        rows += calibration_rows({"attack": attack, "rung": label, "seed": seed}, res.history, res.run_dir.name)
    if stale:
        log(f"{len(stale)} committed rows dropped (no run of the current code holds them): " + "; ".join(stale))
    return rows


def calibrate(
    profile: str = "quick",
    attacks: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] = VALIDATION_SEEDS,
    budget_minutes: float = 60.0,
    results_dir: str | Path | None = None,
    tables_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
    log=print,
    clock=time.perf_counter,
) -> pd.DataFrame:
    """Walk the ladders of ``attacks`` (default: all) by the rule, one rung (all seeds) at a time, starting no rung
    that would end past ``budget_minutes`` (judged by the slowest rung so far); write the table of every run so far
    (rows of earlier calls are kept where their runs are served) and return it. Run again to continue: finished runs
    are served, not recomputed."""
    from ..runner import run_many
    from ..tables import read_table, table_path

    attacks = tuple(LADDERS) if attacks is None else attacks
    unknown = [a for a in attacks if a not in LADDERS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {list(LADDERS)}")
    if budget_minutes <= 0:
        raise ValueError(f"budget_minutes={budget_minutes} must be > 0")
    have = (
        read_table("attack_calibration", profile, tables_dir)
        if table_path("attack_calibration", profile, tables_dir).is_file()
        else pd.DataFrame()
    )
    t0, slowest = clock(), 0.0
    rows = _kept_rows(have, profile, results_dir, options, log)
    while todo := [(a, r) for a, r in next_rungs(pd.DataFrame(rows), seeds) if a in attacks]:
        attack, label = todo[0]
        if clock() - t0 + slowest > 60 * budget_minutes:
            log(f"budget reached: next would be {attack!r} at {label!r}; run the same command again to continue")
            break
        t = clock()
        cfgs = [calibration_config(profile, attack, label, s) for s in seeds]
        results = run_many(cfgs, results_dir, progress=progress, desc=f"{attack}: {label}", options=options)
        slowest = max(slowest, clock() - t)
        rows = [r for r in rows if not (r["attack"] == attack and r["rung"] == label)]
        for s, res in zip(seeds, results):
            rows += calibration_rows({"attack": attack, "rung": label, "seed": s}, res.history, res.run_dir.name)
        df = pd.DataFrame(rows).sort_values(["attack", "step", "seed"], kind="stable").reset_index(drop=True)
        save_run_table(df, "attack_calibration", profile, tables_dir, results_dir)
        v = verdicts(df, seeds)
        last = v[(v["attack"] == attack) & (v["rung"] == label)].iloc[0]
        log(f"{attack} at {label}: mean ASR {last['asr']:.3f} (round 0: {last['asr_round0']:.3f}) → {last['verdict']}")
    return pd.DataFrame(rows)
