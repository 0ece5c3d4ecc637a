"""After calibration (docs/protocol.md, "Calibrated attacks on held-out seeds"): each attack at the rung the rule
froze, run on the held-out seeds without defense; and two client-attack studies written down before their runs:

* **replacement**: model replacement (γ = n) against plain data poisoning at the same poisoned share and schedule,
  each with FedDF fusion and without it (plain FedAvg), so that what fusion does to the replacement algebra shows;
* **durability**: Neurotoxin against the classic attack at the classic attack's frozen rung, and both again at
  Neurotoxin's own (stronger) rung, all stopping halfway (``attack.last_round`` = half the rounds,
  :func:`stop_round`): the ASR in the rounds after the attackers leave.

``python -m paper_repro attacks --study calibrated`` and ``--study clients`` write ``attack_calibrated_<profile>.csv``
and ``attack_clients_<profile>.csv`` (one row per run); both walk their cells in a fixed order within ``--budget``
minutes and continue where they stopped (finished runs are served from the ledger)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pandas as pd

from ..metrics import summarise
from ..options import RunOptions
from ..profiles import load_config
from ..tables import best_defense, ok_rows, read_optional, seed_list
from .calibration import LADDERS, rung, verdicts
from .heldout import DEFENSE_VARIANTS, HELDOUT_SEEDS, VALIDATION, save_run_table
from .packing import packed, trainings_needed


def stop_round(cfg) -> int:
    """Durability: the last attacking round, half the run's rounds (quick profile: rounds 1–5 of 10)."""
    return max(cfg.fl.num_rounds // 2, 1)


def frozen_rungs(profile: str = "quick", tables_dir: str | Path | None = None) -> pd.DataFrame:
    """Per decided attack (calibrated or weak) its frozen rung, read from the committed calibration table."""
    from ..tables import read_table

    v = verdicts(read_table("attack_calibration", profile, tables_dir))
    decided = v[v["verdict"].isin(["calibrated", "weak"])].drop_duplicates("attack")
    return decided[["attack", "verdict", "chosen"]].reset_index(drop=True)


def _frozen(frozen: pd.DataFrame, attack: str) -> str:
    hit = frozen[frozen["attack"] == attack]
    if hit.empty:
        raise ValueError(
            f"{attack!r} has no frozen rung yet (its calibration is undecided): run "
            "`python -m paper_repro attacks --study calibration` until it is decided"
        )
    return str(hit["chosen"].iloc[0])


def calibrated_cells(
    profile: str,
    frozen: pd.DataFrame,
    attacks: tuple[str, ...],
    seeds: tuple[int, ...],
    defense_names: tuple[str, ...] = ("none",),
) -> list:
    """(labels, config) per attack × defense × seed: the frozen rung, the defense at its defaults (or a variant label
    of :data:`~paper_repro.studies.heldout.DEFENSE_VARIANTS`), the validation setting's data."""
    cells = []
    for attack in attacks:
        label = _frozen(frozen, attack)
        verdict = frozen.loc[frozen["attack"] == attack, "verdict"].iloc[0]
        labels = {"attack": attack, "rung": label, "verdict": verdict}
        for d, s in itertools.product(defense_names, seeds):
            lab = {**labels, "defense": d, "seed": s}
            cells.append((lab, calibrated_config(profile, lab)))
    return cells


def _client_config(profile: str, attack: dict, seed: int, fl: dict | None = None):
    return load_config(
        profile,
        data=dict(VALIDATION["data"]),
        attack=dict(attack),
        defense={"name": "none"},
        seed=seed,
        **({"fl": fl} if fl else {}),
    )


def client_cells(profile: str, frozen: pd.DataFrame, seeds: tuple[int, ...]) -> list:
    """(labels, config) of the two client-attack studies (module docstring), arms in a fixed order."""
    replacement = dict(rung("model replacement", _frozen(frozen, "model replacement")).attack)
    poisoning = {**replacement, "kind": "classic", "boost": 1.0}  # the same share and schedule, no scaling
    classic = dict(rung("classic", _frozen(frozen, "classic")).attack)
    neurotoxin = dict(rung("Neurotoxin", _frozen(frozen, "Neurotoxin")).attack)
    stop = stop_round(load_config(profile))
    arms = [
        ("replacement", f"{name}, {'fusion' if fusion else 'FedAvg'}", attack, None if fusion else {"fusion": False})
        for fusion in (True, False)
        for name, attack in (("model replacement", replacement), ("data poisoning", poisoning))
    ] + [
        ("durability", f"{name}{where}", {**at, "kind": kind, "last_round": stop}, None)
        for where, at in (("", classic), (" at Neurotoxin's rung", neurotoxin))
        for name, kind in (("classic", "classic"), ("Neurotoxin", "neurotoxin"))
    ]
    return [
        (
            {"study": study, "arm": arm, "last_round": attack.get("last_round", 0), "seed": s},
            _client_config(profile, attack, s, fl),
        )
        for study, arm, attack, fl in arms
        for s in seeds
    ]


def durability_columns(stop: int, history: pd.DataFrame) -> dict:
    """ASR in round ``stop`` (the attackers' last), and the mean ASR of the rounds after it (NaN for a run that does
    not stop: ``stop`` 0)."""
    if not stop:
        return {"asr_at_stop": float("nan"), "asr_after_stop": float("nan")}
    at = history.loc[history["round"] == stop, "asr"]
    after = history.loc[history["round"] > stop, "asr"]
    return {
        "asr_at_stop": float(at.iloc[0]) if len(at) else float("nan"),
        "asr_after_stop": float(after.mean()) if len(after) else float("nan"),
    }


def summary_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    """One row: the cell's labels, :func:`~paper_repro.metrics.summarise`, the run's name."""
    return [{**labels, **summarise(history), "run": run}]


def client_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    """:func:`summary_rows` with the durability columns (from the ``last_round`` label)."""
    return [{**labels, **summarise(history), **durability_columns(int(labels["last_round"]), history), "run": run}]


def calibrated_config(profile: str, labels: dict, tables_dir=None):
    """The config of a row of ``attack_calibrated`` from its labels alone (for the ledger's recompute)."""
    name, params = DEFENSE_VARIANTS.get(str(labels["defense"]), (str(labels["defense"]), {}))
    return load_config(
        profile,
        data=dict(VALIDATION["data"]),
        attack=dict(rung(str(labels["attack"]), str(labels["rung"])).attack),
        defense={"name": name, "params": params},
        seed=int(labels["seed"]),
    )


def client_config(profile: str, labels: dict, tables_dir=None):
    """The config of a row of ``attack_clients`` from its labels and the committed calibration's frozen rungs."""
    for lab, cfg in client_cells(profile, frozen_rungs(profile, tables_dir), (int(labels["seed"]),)):
        if lab["arm"] == labels["arm"]:
            return cfg
    raise KeyError(f"attack_clients has no arm {labels['arm']!r}")


def walk(
    cells: list,
    table: str,
    profile: str,
    group: str,
    budget_minutes: float,
    results_dir: str | Path | None = None,
    tables_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
    log=print,
    clock=time.perf_counter,
    rows_of=None,
) -> pd.DataFrame:
    """Run ``cells`` (labels, config) in batches of equal ``labels[group]``, in order, starting no batch that needs
    computing once ``budget_minutes`` would be passed (judged by the slowest batch so far; a batch that the results
    folder or the ledger serves whole costs nothing and is always taken); write the table of the batches taken after
    each one. With ``options.jobs`` > 1, a batch whose trainings would leave a worker idle runs together with the
    next one (:func:`packed`). ``rows_of(labels, history, run)`` makes a run's rows (default :func:`summary_rows`).
    Run again to continue."""
    from ..runner import run_many

    if budget_minutes <= 0:
        raise ValueError(f"budget_minutes={budget_minutes} must be > 0")
    batches: dict[str, list] = {}
    for labels, cfg in cells:
        batches.setdefault(str(labels[group]), []).append((labels, cfg))
    sizes = {name: trainings_needed(batch, results_dir, options) for name, batch in batches.items()}
    jobs = (options or RunOptions()).jobs
    rows, t0, slowest, df = [], clock(), 0.0, pd.DataFrame()
    for names in packed(sizes, jobs):
        cached = all(sizes[n] == 0 for n in names)
        if not cached and clock() - t0 + slowest > 60 * budget_minutes:
            log(f"budget reached: next would be {names[0]!r}; run the same command again to continue")
            break
        t = clock()
        todo = [pair for n in names for pair in batches[n]]
        results = run_many(
            [cfg for _, cfg in todo], results_dir, progress=progress, desc=" + ".join(names), options=options
        )
        if not cached:
            slowest = max(slowest, clock() - t)
        for (labels, _), res in zip(todo, results):
            rows += (rows_of or summary_rows)(labels, res.history, res.run_dir.name)
        df = save_run_table(pd.DataFrame(rows), table, profile, tables_dir, results_dir)
        for name in names:
            log(f"{name}: mean ASR {df.loc[df[group].astype(str) == name, 'asr'].mean():.3f}")
    return df


def calibrated_heldout(
    profile: str = "quick",
    attacks: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] = HELDOUT_SEEDS,
    budget_minutes: float = 60.0,
    tables_dir: str | Path | None = None,
    defense_names: tuple[str, ...] = ("none",),
    **kw,
) -> pd.DataFrame:
    """Every decided attack (default: all of them, in the ladders' order) at its frozen rung on ``seeds``, against
    ``defense_names`` (default: none; with the main defenses this is the attack-breadth table of the calibrated
    attacks, one batch per attack so that post-fusion defenses share its trainings)."""
    frozen = frozen_rungs(profile, tables_dir)
    attacks = tuple(a for a in LADDERS if a in set(frozen["attack"])) if attacks is None else attacks
    cells = calibrated_cells(profile, frozen, attacks, seeds, defense_names)
    return walk(cells, "attack_calibrated", profile, "attack", budget_minutes, tables_dir=tables_dir, **kw)


def client_studies(
    profile: str = "quick",
    seeds: tuple[int, ...] = HELDOUT_SEEDS,
    budget_minutes: float = 60.0,
    tables_dir: str | Path | None = None,
    **kw,
) -> pd.DataFrame:
    """The replacement and durability studies on ``seeds`` (their attacks' rungs frozen by the calibration)."""
    cells = client_cells(profile, frozen_rungs(profile, tables_dir), seeds)
    return walk(
        cells, "attack_clients", profile, "arm", budget_minutes, tables_dir=tables_dir, rows_of=client_rows, **kw
    )


COMPARISONS = {
    "R1 replacement beats poisoning under FedAvg": ("model replacement, FedAvg", "data poisoning, FedAvg", "asr"),
    "R2 fusion weakens replacement": ("model replacement, FedAvg", "model replacement, fusion", "asr"),
    "R3 replacement beats poisoning under fusion": ("model replacement, fusion", "data poisoning, fusion", "asr"),
    "N1 Neurotoxin lasts longer": ("Neurotoxin", "classic", "asr_after_stop"),
    "N1b Neurotoxin lasts longer at its own rung": (
        "Neurotoxin at Neurotoxin's rung",
        "classic at Neurotoxin's rung",
        "asr_after_stop",
    ),
}
"""The pre-registered comparisons (docs/protocol.md): label → (arm a, arm b, metric); the hypothesis is a > b."""


def verdict(p: dict, alpha: float = 0.05) -> str:
    """holds: the paired t-interval of a − b excludes 0 above and the Holm-adjusted p ≤ alpha; does not hold: the
    interval excludes 0 below; undecided otherwise (no difference shown either way)."""
    if p["n"] >= 2 and p["lo"] > 0 and p["p_holm"] <= alpha:
        return "holds"
    if p["n"] >= 2 and p["hi"] < 0:
        return "does not hold"
    return "undecided"


def client_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """Per comparison of :data:`COMPARISONS`: the paired per-seed difference a − b, its interval, exact and t
    p-values, Holm's adjustment over the family, and the verdict."""
    from ..stats import holm, paired

    ok = ok_rows(df)
    out = []
    for label, (a, b, metric) in COMPARISONS.items():
        wide = ok[ok["arm"].isin([a, b])].pivot_table(index="seed", columns="arm", values=metric)
        if a not in wide or b not in wide:
            out.append({"comparison": label, "n": 0, "p_t": float("nan")})
            continue
        out.append({"comparison": label, "metric": metric, **paired(wide[a], wide[b])})
    res = pd.DataFrame(out)
    ran = res["n"] > 0
    res["p_holm"] = float("nan")
    res.loc[ran, "p_holm"] = holm(res.loc[ran, "p_t"].fillna(1.0))  # the family: the comparisons that were run
    res["verdict"] = [verdict(r) if r["n"] else "not run" for r in res.to_dict("records")]
    return res


def _interval(values) -> str:
    from ..stats import bootstrap_interval

    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return "–"
    lo, hi = bootstrap_interval(v)
    return f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def _mean(frame: pd.DataFrame, column: str) -> str:
    v = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series(dtype=float)
    return f"{v.mean():.3f}" if len(v) else "–"


def _optional(kind: str, profile: str, tables_dir) -> pd.DataFrame:
    """:func:`~paper_repro.tables.read_optional`, with an empty frame of the columns used here when not made."""
    df = read_optional(kind, profile, tables_dir)
    if df is None:
        return pd.DataFrame(columns=["attack", "rung", "defense", "seed", "asr", "asr_round0", "acc", "attackers_mean"])
    return df


def calibration_markdown(profile: str = "quick", tables_dir=None) -> str:
    """The calibration table of the docs: per attack the rule's verdict and rung (validation seeds), and that rung
    without defense on the held-out seeds (mean ASR with a percentile-bootstrap 95 % interval, round-0 ASR, ACC,
    attackers per round)."""
    from ..tables import read_table

    v = verdicts(read_table("attack_calibration", profile, tables_dir))
    held = _optional("attack_calibrated", profile, tables_dir)
    held = held[held["defense"].eq("none")]
    lines = [
        "| attack | verdict | rung (frozen) | validation ASR (round 0) | held-out ASR [95 % bootstrap] | "
        "held-out round-0 ASR | held-out ACC | attackers per round | held-out seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for attack in LADDERS:
        mine = v[v["attack"] == attack]
        verdict = mine["verdict"].iloc[0]
        chosen = None if pd.isna(mine["chosen"].iloc[0]) else str(mine["chosen"].iloc[0])
        at = mine[mine["rung"] == chosen] if chosen else mine.iloc[0:0]
        val = f"{at['asr'].iloc[0]:.3f} ({at['asr_round0'].iloc[0]:.3f})" if len(at) else "–"
        h = held[(held["attack"] == attack) & (held["rung"] == chosen)] if chosen else held.iloc[0:0]
        seeds = seed_list(h["seed"]) or "–"
        lines.append(
            f"| {attack} | {verdict} | {chosen or '–'} | {val} | {_interval(h['asr'])} | {_mean(h, 'asr_round0')} | "
            f"{_mean(h, 'acc')} | {_mean(h, 'attackers_mean')} | {seeds} |"
        )
    return "\n".join(lines)


def clients_markdown(profile: str = "quick", tables_dir=None) -> str:
    """The client-attack studies of the docs: per arm the held-out seeds' ASR (bootstrap interval), ACC, attackers
    per round and the durability columns; then each pre-registered comparison with its paired statistics."""
    df = _optional("attack_clients", profile, tables_dir)
    if df.empty:
        return "_Not run yet: `python -m paper_repro attacks --study clients --budget 60 --jobs 2`._"
    lines = [
        "| arm | ASR [95 % bootstrap] | ACC | attackers per round | ASR at the last attacking round | "
        "ASR after it (mean of later rounds) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, g in df.groupby("arm", sort=False):
        seeds = seed_list(g["seed"])
        lines.append(
            f"| {arm} | {_interval(g['asr'])} | {_mean(g, 'acc')} | {_mean(g, 'attackers_mean')} | "
            f"{_mean(g, 'asr_at_stop')} | {_mean(g, 'asr_after_stop')} | {seeds} |"
        )
    res = client_verdicts(df)
    lines += [
        "",
        "| comparison (a > b) | metric | seeds | a − b [95 % t] | paired t p | Holm p | exact p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.to_dict("records"):
        if not r["n"]:
            lines.append(f"| {r['comparison']} | – | 0 | – | – | – | – | {r['verdict']} |")
            continue
        lines.append(
            f"| {r['comparison']} | {r['metric']} | {r['n']} | {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] | "
            f"{r['p_t']:.3g} | {r['p_holm']:.3g} | {r['p_exact']:.3g} | {r['verdict']} |"
        )
    return "\n".join(lines)


def breadth_markdown(profile: str = "quick", tables_dir=None) -> str:
    """The calibrated attacks against each defense run on them: per attack × defense the mean final ASR, how many
    seeds are at ≤ 0.10, and the paired mean ACC cost against no defense on the same seeds (points)."""
    df = _optional("attack_calibrated", profile, tables_dir)
    defenses = [d for d in dict.fromkeys(df["defense"]) if d != "none"]
    if not defenses:
        return "_No defense run on the calibrated attacks yet (`attacks --study calibrated --defenses ...`)._"
    best = best_defense(df).set_index("attack")
    lines = [
        "| attack | none | " + " | ".join(defenses) + " | best (≤ 2 pt, no defense a candidate) |",
        "|---|---|" + "---|" * len(defenses) + "---|",
    ]
    for attack in (a for a in LADDERS if a in set(df["attack"])):
        g = df[df["attack"] == attack]
        base = g[g["defense"] == "none"].set_index("seed")
        cells = []
        for d in defenses:
            r = g[g["defense"] == d].set_index("seed")
            if r.empty:
                cells.append("–")
                continue
            cost = 100 * (base["acc"].reindex(r.index) - r["acc"]).mean()
            k = int((r["asr"] <= 0.10).sum())
            cells.append(f"{r['asr'].mean():.3f} ({k}/{len(r)} ≤ 0.10; {cost:+.1f} pt)")
        b = best.loc[attack] if attack in best.index else None
        pick = "–" if b is None or pd.isna(b.get("best")) else f"{b['best']} ({b['best_asr']:.3f})"
        lines.append(f"| {attack} | {_mean(base, 'asr')} | " + " | ".join(cells) + f" | {pick} |")
    return "\n".join(lines)
