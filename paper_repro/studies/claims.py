"""The claims table of ``docs/results.md``: each claim of the paper's abstract and each of our own findings, the
table that carries it, the numbers, and its verdict (holds / does not hold / undecided / not run), drawn from the
committed tables by a rule written here, never typed by hand (``python -m paper_repro.prose --write``).

The rules follow ``docs/protocol.md``: a defense *stops* an attack when its ASR is ≤ 0.10 on every seed, at a mean
clean-ACC cost ≤ 2 points against no defense on the same seeds (paired); an attack *works* when its mean ASR without
defense is ≥ 0.80; a verdict needs ≥ 5 held-out seeds (:data:`MIN_SEEDS`), and with fewer the claim is *undecided*
and its numbers are shown as they stand. A weak attack (the calibration's verdict) carries no claim that a defense
fails against it."""

from __future__ import annotations

import pandas as pd

from ..tables import ok_rows, read_table, seed_list

ASR_TARGET, ACC_COST_TARGET, WORKS = 0.10, 0.02, 0.80
MIN_SEEDS = 5
UPDATE_COMPARING = ("norm_clip", "dp", "krum", "multi_krum", "median", "trimmed_mean", "flame", "foolsgold", "mars")


def _table(kind: str, profile: str, tables_dir) -> pd.DataFrame | None:
    try:
        df = read_table(kind, profile, tables_dir)
    except FileNotFoundError:
        return None
    return ok_rows(df)


def _seeds(s: pd.Series) -> str:
    return f"seeds {seed_list(s)}"


def _settled(verdict: str, n: int) -> str:
    return verdict if n >= MIN_SEEDS else f"undecided ({n} < {MIN_SEEDS} seeds; as they stand: {verdict})"


def stops(defended: pd.DataFrame, undefended: pd.DataFrame) -> tuple[str, str]:
    """The protocol's "stops" on rows of one cell (a defense and no defense, one row per seed): verdict, evidence."""
    d, u = defended.set_index("seed"), undefended.set_index("seed")
    seeds = d.index.intersection(u.index)
    if d.empty:
        return "not run", "–"
    k = int((d["asr"] <= ASR_TARGET).sum())
    cost = (u.loc[seeds, "acc"] - d.loc[seeds, "acc"]).mean()
    ok = k == len(d) and cost <= ACC_COST_TARGET
    text = (
        f"ASR {d['asr'].mean():.3f} (max {d['asr'].max():.3f}; {k} of {len(d)} seeds ≤ {ASR_TARGET:.2f}) against "
        f"{u['asr'].mean():.3f} without defense; ACC cost {100 * cost:.1f} points ({_seeds(d.index)})"
    )
    return _settled("holds" if ok else "does not hold", len(d)), text


def _cell(df: pd.DataFrame, **eq) -> pd.DataFrame:
    for k, v in eq.items():
        df = df[df[k] == v]
    return df


def paper_claims(profile: str, tables_dir) -> list[dict]:
    grid, held = _table("grid", profile, tables_dir), _table("heldout", profile, tables_dir)
    rows = []
    cal = _table("attack_calibrated", profile, tables_dir)
    fm = None if cal is None else _cell(cal, attack="FM patch", defense="none")
    if fm is None or fm.empty:
        rows.append(dict(claim="P1", verdict="not run", table="attack_calibrated", evidence="–"))
    else:
        v = "holds" if fm["asr"].mean() >= WORKS else "does not hold"
        ev = f"FM patch, no defense: ASR {fm['asr'].mean():.3f}, round 0 {fm['asr_round0'].mean():.3f}"
        ev += f", {_seeds(fm['seed'])}"
        rows.append(dict(claim="P1", verdict=_settled(v, len(fm)), table="attack_calibrated", evidence=ev))
    if grid is not None:
        fm_grid = grid[(grid["attack"] == "fm") & (grid["partition"] == "dirichlet0.5")]
        means = fm_grid.groupby("defense")["asr"].mean()
        present = [d for d in UPDATE_COMPARING if d in means]
        lowest = min(present, key=lambda d: means[d])
        v = "holds" if all(means[d] > ASR_TARGET for d in present) else "does not hold"
        n = int(fm_grid[fm_grid["defense"] == lowest]["seed"].nunique())
        ev = (
            f"FM attack, Dirichlet 0.5: {len(present)} update-comparing defenses leave ASR at "
            f"{min(means[present]):.3f}–{max(means[present]):.3f} (lowest: {lowest})"
        )
        rows.append(dict(claim="P2", verdict=_settled(v, n), table="grid", evidence=ev))
    if held is not None:
        val = _cell(held, setting="validation", attack="fm")
        v, ev = stops(_cell(val, defense="act_bound"), _cell(val, defense="none"))
        rows.append(dict(claim="P3", verdict=v, table="heldout (validation setting)", evidence=ev))
    if grid is not None:
        g = grid[(grid["attack"] == "classic") & (grid["partition"] == "dirichlet0.5")]
        v, ev = stops(_cell(g, defense="act_bound"), _cell(g, defense="none"))
        rows.append(dict(claim="P4", verdict=v, table="grid (classic, Dirichlet 0.5)", evidence=ev))
    calib = _table("attack_calibration", profile, tables_dir)
    if calib is not None:
        from .calibration import LADDERS, verdicts

        vv = verdicts(calib).drop_duplicates("attack").set_index("attack")
        fm_attacks = [a for a in LADDERS if a.startswith("FM")]
        working = [a for a in fm_attacks if vv.loc[a, "verdict"] == "calibrated"]
        weak = [a for a in fm_attacks if vv.loc[a, "verdict"] == "weak"]
        open_ = [a for a in fm_attacks if vv.loc[a, "verdict"] == "undecided"]
        ev = (
            f"FM attacks that work without defense: {', '.join(working) or 'none'}; weak: {', '.join(weak) or 'none'}; "
            f"undecided: {', '.join(open_) or 'none'}"
        )
        v = "undecided (one working FM trigger)" if len(working) < 2 else "undecided (breadth table not run)"
        rows.append(dict(claim="P5", verdict=v, table="attack_calibration", evidence=ev))
    return rows


def own_findings(profile: str, tables_dir) -> list[dict]:
    from .calibrated import COMPARISONS, client_verdicts

    rows = []
    clients = _table("attack_clients", profile, tables_dir)
    res = None if clients is None else client_verdicts(clients).set_index("comparison")
    for label in COMPARISONS:
        code, _, text = label.partition(" ")
        if res is None or res.loc[label, "n"] == 0:
            rows.append(dict(claim=code, verdict="not run", table="attack_clients", evidence="–"))
            continue
        r = res.loc[label]
        ev = (
            f"{r['metric']}: a − b {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}], Holm p {r['p_holm']:.3g}, "
            f"{int(r['n'])} paired seeds"
        )
        rows.append(dict(claim=code, verdict=_settled(r["verdict"], int(r["n"])), table="attack_clients", evidence=ev))
    study = _table("defense_study", profile, tables_dir)
    if study is None:
        rows += [dict(claim=h, verdict="not run", table="defense_study", evidence="–") for h in ("H1", "H2", "H3")]
    else:
        from .defense_study import verdicts

        for r in verdicts(study).to_dict("records"):
            ev = f"variant {r['variant']}" if r.get("variant") else "–"
            rows.append(dict(claim=r["hypothesis"], verdict=r["verdict"], table="defense_study", evidence=ev))
    return rows


CLAIMS = {
    "P1": "A compromised FM plants a backdoor in the global model through fusion, without a malicious client",
    "P2": "Defenses that compare client updates do not stop the FM attack",
    "P3": "The activation-bound defense stops the FM backdoor (at ≤ 2 points of ACC)",
    "P4": "… and the classic malicious-client backdoor",
    "P5": "… whatever the FM's trigger",
    "R1": "Model replacement (γ = n/η) plants more than data poisoning at the same share, under FedAvg",
    "R2": "FedDF fusion weakens model replacement",
    "R3": "Model replacement plants more than data poisoning under fusion",
    "N1": "Neurotoxin's backdoor outlasts the classic one after the attackers stop (classic's rung)",
    "N1b": "… at Neurotoxin's own rung",
    "H1": "act_bound works only where the trigger sits on constant background",
    "H2": "act_bound's amplification comes from bounding class-selective units of the last hidden layer",
    "H3": "The abstract's defense (optimised bounds acting in aggregation) holds where act_bound fails",
}
"""Each claim's wording (P: the paper's abstract; R, N: the client-attack studies; H: the defense study)."""


def claims_table(profile: str = "quick", tables_dir=None) -> pd.DataFrame:
    rows = paper_claims(profile, tables_dir) + own_findings(profile, tables_dir)
    return pd.DataFrame([{"claim": r["claim"], "says": CLAIMS[r["claim"]], **r} for r in rows])


def claims_markdown(profile: str = "quick", tables_dir=None) -> str:
    lines = ["| | claim | verdict | numbers | table |", "|---|---|---|---|---|"]
    for r in claims_table(profile, tables_dir).to_dict("records"):
        lines.append(f"| {r['claim']} | {r['says']} | **{r['verdict']}** | {r['evidence']} | `{r['table']}` |")
    return "\n".join(lines)
