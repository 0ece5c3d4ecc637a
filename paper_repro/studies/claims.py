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

from ..tables import read_optional, seed_list

ASR_TARGET, ACC_COST_TARGET, WORKS = 0.10, 0.02, 0.80
MIN_SEEDS = 5
UPDATE_COMPARING = ("norm_clip", "dp", "krum", "multi_krum", "median", "trimmed_mean", "flame", "foolsgold", "mars")


def _seeds(s) -> str:
    return f"seeds {seed_list(s)}"


def _settled(verdict: str, n: int) -> str:
    return verdict if n >= MIN_SEEDS else f"undecided ({n} < {MIN_SEEDS} seeds; as they stand: {verdict})"


def _tentative(verdict: str) -> str:
    """The verdict a cell's seeds show, also when too few to settle it ("undecided (…; as they stand: X)" → X)."""
    return verdict.rsplit("as they stand: ", 1)[-1].rstrip(")")


def _not_run(claim: str, table: str) -> dict:
    return dict(claim=claim, verdict="not run", table=table, evidence="–")


def _by_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per seed (the mean where a table repeats a seed)."""
    return rows.groupby("seed")[["asr", "acc"]].mean()


def stops(defended: pd.DataFrame, undefended: pd.DataFrame) -> tuple[str, str]:
    """The protocol's "stops" on rows of one cell (a defense and no defense): on the seeds both have (paired), ASR ≤
    0.10 on every seed and mean ACC cost ≤ 2 points. Not run without a defended row or without a shared seed."""
    d, u = _by_seed(defended), _by_seed(undefended)
    seeds = d.index.intersection(u.index)
    if seeds.empty:
        return "not run", "–"
    d, u = d.loc[seeds], u.loc[seeds]
    k = int((d["asr"] <= ASR_TARGET).sum())
    cost = (u["acc"] - d["acc"]).mean()
    ok = k == len(seeds) and cost <= ACC_COST_TARGET
    text = (
        f"ASR {d['asr'].mean():.3f} (max {d['asr'].max():.3f}; {k} of {len(seeds)} seeds ≤ {ASR_TARGET:.2f}) against "
        f"{u['asr'].mean():.3f} without defense; ACC cost {100 * cost:.1f} points ({_seeds(seeds)})"
    )
    return _settled("holds" if ok else "does not hold", len(seeds)), text


def _cell(df: pd.DataFrame, **eq) -> pd.DataFrame:
    for k, v in eq.items():
        df = df[df[k] == v]
    return df


def _frozen(cal: pd.DataFrame, calib: pd.DataFrame | None) -> tuple[dict, pd.DataFrame]:
    """Each attack's calibration (verdict, frozen rung) and the rows of ``attack_calibrated`` at that rung."""
    from .calibration import verdicts

    if calib is None:
        return {}, cal.iloc[0:0]
    vv = verdicts(calib).drop_duplicates("attack").set_index("attack")
    rung = {a: (vv.loc[a, "verdict"], vv.loc[a, "chosen"]) for a in vv.index}
    keep = [rung.get(a, (None, None))[1] == r for a, r in zip(cal["attack"], cal["rung"])]
    return rung, cal[keep]


def _base(defense: str) -> str:
    """A defense label's defense name (``"dp sigma0.01"`` → ``dp``; a plain name is its own)."""
    from .heldout import DEFENSE_VARIANTS

    return str(DEFENSE_VARIANTS.get(defense, (defense, {}))[0])


def p2(grid: pd.DataFrame) -> tuple[str, str]:
    """P2 on the grid (FM attack, Dirichlet 0.5): :func:`p2_cells` on its rows."""
    g = grid[(grid["attack"] == "fm") & (grid["partition"] == "dirichlet0.5")]
    return p2_cells(g, "FM attack, Dirichlet 0.5")


def p2_cells(g: pd.DataFrame, where: str) -> tuple[str, str]:
    """P2 on the rows ``g`` of one attack (defense, seed, asr, acc): holds when the attack works without defense and
    none of the update-comparing defenses present (a variant label counts by its defense's name) stops it (the
    protocol's "stops", per seed, paired); does not hold when one stops it. Undecided when the attack does not work
    (no claim rests on a weak attack) and, short of a defense that stops it, while one of :data:`UPDATE_COMPARING`
    is not run on these rows."""
    none = _cell(g, defense="none")
    present = [d for d in dict.fromkeys(g["defense"]) if _base(d) in UPDATE_COMPARING]
    if none.empty or not present:
        return "not run", "–"
    results = {d: stops(_cell(g, defense=d), none) for d in present}
    n = min(_by_seed(_cell(g, defense=d)).index.intersection(_by_seed(none).index).size for d in present)
    means = {d: _cell(g, defense=d)["asr"].mean() for d in present}
    lowest = min(present, key=means.get)
    stoppers = [d for d, (v, _) in results.items() if _tentative(v) == "holds"]
    ev = (
        f"{where}, no defense {none['asr'].mean():.3f}; {len(present)} update-comparing defenses "
        f"leave ASR at {min(means.values()):.3f}–{max(means.values()):.3f} (lowest: {lowest}: {results[lowest][1]})"
    )
    if none["asr"].mean() < WORKS:
        return f"undecided (the attack does not work without defense: {none['asr'].mean():.3f} < {WORKS:.2f})", ev
    if stoppers:
        return _settled("does not hold", n), f"{ev}; stopped by {', '.join(stoppers)}"
    missing = [d for d in UPDATE_COMPARING if d not in {_base(x) for x in present}]
    if missing:  # "none stops it" needs every one of them run
        return f"undecided (not run yet: {', '.join(missing)})", ev
    return _settled("holds", n), ev


def p5(rung: dict, cal: pd.DataFrame, defense: str = "act_bound") -> tuple[str, str]:
    """P5 on the calibrated attacks: the defense stops every FM attack that works (calibrated) at its frozen rung
    → holds (needs two or more working FM triggers, else undecided); does not hold when one working FM attack is
    not stopped. Weak attacks carry no claim; an attack whose calibration is open is listed as such."""
    fm = [a for a in rung if a.startswith("FM")]
    working = [a for a in fm if rung[a][0] == "calibrated"]
    weak = [a for a in fm if rung[a][0] == "weak"]
    open_ = [a for a in fm if rung[a][0] not in ("calibrated", "weak")]
    per = {a: stops(_cell(cal, attack=a, defense=defense), _cell(cal, attack=a, defense="none")) for a in working}
    ran = {a: r for a, r in per.items() if r[0] != "not run"}
    ev = "; ".join(f"{a}: {e}" for a, (_, e) in ran.items()) or f"{defense} not run on the working FM attacks"
    ev += f" (working FM attacks: {', '.join(working) or 'none'}; weak: {', '.join(weak) or 'none'}"
    ev += f"; calibration open: {', '.join(open_) or 'none'})"
    if not ran:
        return "not run", ev
    n = min(_by_seed(_cell(cal, attack=a, defense=defense)).shape[0] for a in ran)
    if any(_tentative(v) == "does not hold" for v, _ in ran.values()):
        return _settled("does not hold", n), ev
    if len(ran) < len(working):
        return "undecided (not run on every working FM attack)", ev
    if len(working) < 2:
        return "undecided (one working FM trigger)", ev
    return _settled("holds", n), ev


def paper_claims(profile: str, tables_dir) -> list[dict]:
    grid, held = read_optional("grid", profile, tables_dir), read_optional("heldout", profile, tables_dir)
    cal, calib = (
        read_optional("attack_calibrated", profile, tables_dir),
        read_optional("attack_calibration", profile, tables_dir),
    )
    rows = []
    if cal is None:
        rung, frozen = {}, None
    else:
        rung, frozen = _frozen(cal, calib)
    fm = None if frozen is None else _cell(frozen, attack="FM patch", defense="none")
    if fm is None or fm.empty:
        rows.append(_not_run("P1", "attack_calibrated"))
    else:
        v = "holds" if fm["asr"].mean() >= WORKS else "does not hold"
        ev = f"FM patch ({rung['FM patch'][1]}), no defense: ASR {fm['asr'].mean():.3f}, round 0 "
        ev += f"{fm['asr_round0'].mean():.3f}, {_seeds(fm['seed'].unique())}"
        rows.append(dict(claim="P1", verdict=_settled(v, fm["seed"].nunique()), table="attack_calibrated", evidence=ev))
    patch = None if frozen is None else _cell(frozen, attack="FM patch")
    if patch is not None and any(_base(d) in UPDATE_COMPARING for d in set(patch["defense"])):
        where = f"FM patch ({rung['FM patch'][1]}), Dirichlet 0.5"
        v, ev = p2_cells(patch, where)
        rows.append(dict(claim="P2", verdict=v, table="attack_calibrated (FM patch at its frozen rung)", evidence=ev))
    elif grid is None:
        rows.append(_not_run("P2", "grid"))
    else:
        v, ev = p2(grid)
        rows.append(dict(claim="P2", verdict=v, table="grid", evidence=ev))
    for claim, attack, fallback in (("P3", "FM patch", "heldout"), ("P4", "classic", "grid")):
        cell = None if frozen is None else _cell(frozen, attack=attack)
        if cell is not None and not _cell(cell, defense="act_bound").empty:
            v, ev = stops(_cell(cell, defense="act_bound"), _cell(cell, defense="none"))
            table = f"attack_calibrated ({attack} at its frozen rung)"
        elif fallback == "heldout" and held is not None:
            val = _cell(held, setting="validation", attack="fm")
            v, ev = stops(_cell(val, defense="act_bound"), _cell(val, defense="none"))
            table = "heldout (validation setting)"
        elif fallback == "grid" and grid is not None:
            g = grid[(grid["attack"] == "classic") & (grid["partition"] == "dirichlet0.5")]
            v, ev = stops(_cell(g, defense="act_bound"), _cell(g, defense="none"))
            table = "grid (classic, Dirichlet 0.5)"
        else:
            rows.append(_not_run(claim, "attack_calibrated"))
            continue
        rows.append(dict(claim=claim, verdict=v, table=table, evidence=ev))
    if frozen is None or not rung:
        rows.append(_not_run("P5", "attack_calibrated"))
    else:
        v, ev = p5(rung, frozen)
        rows.append(dict(claim="P5", verdict=v, table="attack_calibrated", evidence=ev))
    return rows


def own_findings(profile: str, tables_dir) -> list[dict]:
    from .calibrated import COMPARISONS, client_verdicts

    rows = []
    clients = read_optional("attack_clients", profile, tables_dir)
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
    study = read_optional("defense_study", profile, tables_dir)
    if study is None:
        rows += [dict(claim=h, verdict="not run", table="defense_study", evidence="–") for h in ("H1", "H2", "H3")]
    else:
        from . import defense_study as ds

        v1, r1 = ds.h1(study)
        ev = "; ".join(
            f"{r['setting']}: D(corner) − D({r['setting']}) {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}], Holm p "
            f"{r['p_holm']:.3g}, act_bound ≤ 0.10 on {r['below_k']}/{r['below_n']}"
            for r in r1.to_dict("records")
        )
        rows.append(dict(claim="H1", verdict=v1, table="defense_study", evidence=ev or "–"))
        v2, r2 = ds.h2(study)
        ev = "; ".join(
            f"{r['attack']}, {r['defense']}: rise {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
            for r in r2.to_dict("records")
        )
        rows.append(dict(claim="H2", verdict=v2, table="defense_study", evidence=ev or "–"))
        choice = ds.h3_choice(study)
        v3, r3 = ds.h3(study, choice)
        ev = f"variant {choice}" if choice else "no variant chosen yet"
        ev += "".join(
            f"; {r['setting']}: reduction {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}], cost "
            f"{100 * r['cost']:.1f} pt"
            for r in r3.to_dict("records")
        )
        rows.append(dict(claim="H3", verdict=v3, table="defense_study", evidence=ev))
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
