"""The defense study (docs/protocol.md, "The defense study", pre-registered): its cells and its decision rules.

* **H1 (background):** the FM patch at the corner, the centre, on the garment, and at the corner of the textured
  Fashion-MNIST; no defense against ``act_bound``.
* **H2 (amplification):** the attacks ``act_bound`` amplified (dirty-label SIG, all-to-all, the bound-aware pattern)
  against no defense, ``act_bound``, its bounds at ``relu2`` only or ``relu3`` only, and class-conditional bounds;
  post-fusion variants share the no-defense training, so every comparison is paired.
* **H3 (the abstract's defense):** the bounds inside fusion and at the clients, chosen on the validation seeds and
  the even test half, reported on the held-out seeds and the odd half.

Every cell varies the FM's draw with the seed (``fm.sample_seed = seed``) and draws the defense's fitting subset from
the run (``fit_draw="run"``). ``python -m paper_repro`` has no command for it yet: :func:`run` walks the cells within
a budget (as the calibration does) and writes ``defense_study_<profile>.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..profiles import load_config
from ..stats import clopper_pearson, holm, paired
from ..tables import ok_rows, seed_list
from .heldout import DEFENSE_VARIANTS, VALIDATION

HEADLINE_SEEDS = tuple(range(10, 20))
"""Ten held-out seeds for the headline cells (corner and textured, none and act_bound)."""
SEEDS = tuple(range(10, 15))
"""Five held-out seeds for every other cell."""
SELECTION_SEEDS = (0, 1, 2)
"""Where H3's variant is chosen (with the even test half)."""
TEXTURED_FM = "data/fm/fashion_mnist_textured_ddpm"
"""The textured dataset's own FM (``python -m paper_repro.fm train --dataset fashion_mnist_textured --out ...``)."""

TEXTURED_BASELINE = "mmac"
"""The best baseline of the validation setting, which the protocol runs on the textured set beside act_bound: the
protocol's best-defense rule (:func:`paper_repro.tables.best_defense`: ≤ 2 points of ACC, no defense a candidate) on
the defense grid's FM attack under Dirichlet 0.5 with act_bound left out picks MMAC (0.888 against 0.932, 0.5 points;
written before the textured cells ran). Post-fusion, so it shares their trainings; five seeds (not a headline cell)."""

PLACEMENTS = {
    "corner": {},
    "centre": {"attack": {"trigger_position": "centre"}},
    "garment": {"attack": {"trigger_position": "garment"}},
    "textured": {"data": {"dataset": "fashion_mnist_textured"}, "fm": {"checkpoint": TEXTURED_FM}},
}
"""H1's settings, each one change against the validation setting (FM patch at the corner, share 0.2)."""
AMPLIFIED = {
    "SIG": {"attack": {"trigger": "sig", "blend_alpha": round(20 / 255, 4)}},
    "all-to-all": {"attack": {"mapping": "all_to_all"}},
    "bound-aware": {"attack": {"kind": "fm_bound_aware"}},
}
"""H2's attacks: where the committed held-out tables show act_bound raising ASR."""
H2_DEFENSES = ("none", "act_bound", "act_bound relu2 only", "act_bound relu3 only", "act_bound_cc")
H3_DEFENSES = (
    "none",
    "act_bound",
    "act_bound fusion teachers",
    "act_bound fusion both",
    "act_bound to clients",
    "act_bound fusion both to clients",
    "act_bound optimised",
    "act_bound optimised fusion both",
)
FIT_DRAWN = ("act_bound", "mm_bm", "mmac", "mm_bm_neuron", "mmac_neuron", "act_bound_cc")
"""Defenses whose fitting subset is drawn from the run in this study."""


def study_config(profile: str, setting: dict, defense: str, seed: int, half: str = "odd"):
    """One cell: the validation setting with ``setting``'s changes, the defense (a name or a variant label), the FM's
    draw and the defense's fitting subset varied by ``seed``, ACC/ASR on test half ``half``."""
    name, params = DEFENSE_VARIANTS.get(defense, (defense, {}))
    if name in FIT_DRAWN:
        params = {**params, "fit_draw": "run"}
    merged = {k: dict(v) for k, v in VALIDATION.items()}
    merged["fm"] = {"sample_seed": seed}
    merged["data"]["test_half"] = half
    for section, values in setting.items():
        merged[section] = {**merged.get(section, {}), **values}
    return load_config(profile, defense={"name": name, "params": params}, seed=seed, **merged)


def labels_config(profile: str, labels: dict, tables_dir=None):
    """The config of a row of ``defense_study`` from its labels alone (for the ledger's recompute)."""
    setting = {**PLACEMENTS, **AMPLIFIED}[str(labels["setting"])]
    return study_config(profile, setting, str(labels["defense"]), int(labels["seed"]), str(labels["half"]))


def cells(profile: str = "quick", h3_variant: str | None = None) -> list:
    """(labels, config) of every cell, in the order they are run: H1 on plain Fashion-MNIST, H2, H1 on the textured
    set, H3's selection, then (once ``h3_variant`` is chosen) H3's held-out cells. ``labels["batch"]`` names the
    group a walk runs together (post-fusion defenses of one setting share its trainings)."""
    out = []

    def add(h, setting_name, setting, defenses, seeds, half="odd"):
        for d in defenses:
            for s in seeds:
                labels = {"batch": f"{h} {setting_name}", "hypothesis": h, "setting": setting_name}
                labels |= {"defense": d, "half": half, "seed": s}
                out.append((labels, study_config(profile, setting, d, s, half)))

    add("H1", "corner", PLACEMENTS["corner"], ("none", "act_bound"), HEADLINE_SEEDS)
    for p in ("centre", "garment"):
        add("H1", p, PLACEMENTS[p], ("none", "act_bound"), SEEDS)
    for a, setting in AMPLIFIED.items():
        add("H2", a, setting, H2_DEFENSES, SEEDS)
    add("H1", "textured", PLACEMENTS["textured"], ("none", "act_bound"), HEADLINE_SEEDS)
    add("H1", "textured", PLACEMENTS["textured"], (TEXTURED_BASELINE,), SEEDS)
    for p in ("corner", "centre", "textured"):
        add("H3 selection", p, PLACEMENTS[p], H3_DEFENSES, SELECTION_SEEDS, half="even")
    if h3_variant is not None:
        for p in ("corner", "centre", "textured"):
            add("H3", p, PLACEMENTS[p], ("none", "act_bound", h3_variant), SEEDS)
    return out


def placement_shares(x: np.ndarray, size: int = 3) -> dict[str, float]:
    """Per trigger position of :data:`paper_repro.triggers.POSITIONS`, the share of images ``x`` (N, C, H, W uint8)
    with something other than background inside the ``size``×``size`` square where
    :func:`paper_repro.triggers.badnets_patch` puts it (:func:`paper_repro.backgrounds.region_busy_share`). Kept out
    of ``backgrounds``, which every run's code digest covers."""
    from ..backgrounds import region_busy_share
    from ..triggers import POSITIONS, patch_origin

    out = {}
    for pos in POSITIONS:
        top, left = patch_origin(x.shape[-2], x.shape[-1], size, pos)
        out[pos] = region_busy_share(x, slice(top, top + size), slice(left, left + size))
    return out


def _wide(df: pd.DataFrame, setting: str, metric: str = "asr") -> pd.DataFrame:
    """seed × defense of ``metric`` for one setting (held-out, odd half)."""
    g = ok_rows(df)
    g = g[(g["setting"] == setting) & (g["half"] == "odd")]
    return g.pivot_table(index="seed", columns="defense", values=metric)


def k_of_n_below(values, threshold: float = 0.10) -> dict:
    """How many seeds are at or below ``threshold``, of how many, with a Clopper–Pearson 95 % interval."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    k, n = int((v <= threshold).sum()), len(v)
    lo, hi = clopper_pearson(k, n) if n else (float("nan"), float("nan"))
    return {"k": k, "n": n, "share_lo": lo, "share_hi": hi}


def h1(df: pd.DataFrame, defense: str = "act_bound", alpha: float = 0.05) -> tuple[str, pd.DataFrame]:
    """H1's rule: the corner's paired reduction D = ASR(none) − ASR(defense) exceeds each non-background setting's
    (paired by seed, Holm over the settings present) → holds; the defense at ≤ 0.10 on ≥ 80 % of a non-background
    setting's seeds → does not hold; else undecided. Returns the verdict and the comparisons."""
    corner = _wide(df, "corner")
    d_corner = corner["none"] - corner[defense]
    rows = []
    for p in ("centre", "garment", "textured"):
        w = _wide(df, p)
        if w.empty or defense not in w:
            continue
        d_p = (w["none"] - w[defense]).reindex(d_corner.index)
        below = k_of_n_below(w[defense])
        rows.append({"setting": p, **paired(d_corner, d_p), **{f"below_{k}": v for k, v in below.items()}})
    res = pd.DataFrame(rows)
    if res.empty:
        return "not run", res
    res["p_holm"] = holm(res["p_t"].fillna(1.0))
    if ((res["below_n"] > 0) & (res["below_k"] >= 0.8 * res["below_n"])).any():
        return "does not hold", res
    if len(res) == 3 and ((res["lo"] > 0) & (res["p_holm"] <= alpha)).all():
        return "holds", res
    return "undecided", res


def h2(df: pd.DataFrame, alpha: float = 0.05) -> tuple[str, pd.DataFrame]:
    """H2's rule, per attack where act_bound amplifies (its paired rise over none has an interval above 0): the rise
    with ``relu3`` only bounds above 0, and with ``relu2`` only and with class-conditional bounds not above 0 →
    holds there. H2 holds if it holds for every amplifying attack; does not hold if the ``relu2``-only rise is above
    0 for any; else undecided."""
    rows = []
    for a in AMPLIFIED:
        w = _wide(df, a)
        if w.empty or "none" not in w:
            continue
        for v in H2_DEFENSES[1:]:
            if v in w:
                rows.append({"attack": a, "defense": v, **paired(w[v], w["none"])})
    res = pd.DataFrame(rows)
    if res.empty:
        return "not run", res
    res["p_holm"] = holm(res["p_t"].fillna(1.0))
    res["above"] = (res["lo"] > 0) & (res["p_holm"] <= alpha)
    by = res.set_index(["attack", "defense"])["above"]
    amplifying = [a for a in AMPLIFIED if by.get((a, "act_bound"), False)]
    if not amplifying:
        return "undecided", res
    if any(by.get((a, "act_bound relu2 only"), False) for a in amplifying):
        return "does not hold", res
    if all(
        by.get((a, "act_bound relu3 only"), False)
        and (a, "act_bound relu2 only") in by
        and (a, "act_bound_cc") in by
        and not by[(a, "act_bound_cc")]
        for a in amplifying
    ):
        return "holds", res
    return "undecided", res


def h3_choice(df: pd.DataFrame, max_cost: float = 0.02) -> str | None:
    """The H3 variant chosen by the protocol's rule on the selection cells (validation seeds, even half, every
    placement pooled): among the fusion/client variants whose mean ACC cost against none is at most ``max_cost``,
    the lowest mean ASR. None when none qualifies."""
    sel = df[(df["hypothesis"] == "H3 selection") & df["status"].fillna("ok").eq("ok")]
    if sel.empty:
        return None
    base = sel[sel["defense"] == "none"].set_index(["setting", "seed"])["acc"]
    best, best_asr = None, np.inf
    for d in H3_DEFENSES[2:]:
        g = sel[sel["defense"] == d]
        if g.empty:
            continue
        cost = float(np.nanmean(base.reindex(pd.MultiIndex.from_frame(g[["setting", "seed"]])).values - g["acc"]))
        if cost <= max_cost and g["asr"].mean() < best_asr:
            best, best_asr = d, g["asr"].mean()
    return best


def h3(df: pd.DataFrame, variant: str | None, max_cost: float = 0.02) -> tuple[str, pd.DataFrame]:
    """H3's rule on the held-out cells: on the textured set and at the centre, the chosen variant's paired
    reduction ASR(none) − ASR(variant) has an interval above 0 at a mean ACC cost ≤ ``max_cost`` → holds; its
    interval includes 0 (or lies below) on both → does not hold; else undecided."""
    if variant is None:
        return "not run", pd.DataFrame()
    rows = []
    for p in ("textured", "centre"):
        asr, acc = _wide(df, p), _wide(df, p, "acc")
        if asr.empty or variant not in asr or "none" not in asr:
            continue
        rows.append(
            {"setting": p, **paired(asr["none"], asr[variant]), "cost": float((acc["none"] - acc[variant]).mean())}
        )
    res = pd.DataFrame(rows)
    if len(res) < 2:
        return "undecided" if len(res) else "not run", res
    if ((res["lo"] > 0) & (res["cost"] <= max_cost)).all():
        return "holds", res
    if (res["lo"] <= 0).all():
        return "does not hold", res
    return "undecided", res


def run(profile: str = "quick", budget_minutes: float = 60.0, tables_dir: str | Path | None = None, log=print, **kw):
    """Walk :func:`cells` within the budget (served runs cost nothing) into ``defense_study_<profile>.csv``; the
    textured cells wait for the textured FM (:data:`TEXTURED_FM`), H3's held-out cells for its selection."""
    from ..store import resolve_path
    from ..tables import read_table, table_path
    from .calibrated import walk

    todo = cells(profile)
    if table_path("defense_study", profile, tables_dir).is_file():
        choice = h3_choice(read_table("defense_study", profile, tables_dir))
        todo = cells(profile, choice)
    if not resolve_path(TEXTURED_FM).exists():
        log(
            f"{TEXTURED_FM} is missing: the textured cells wait (train it with python -m paper_repro.fm train "
            f"--dataset fashion_mnist_textured --out {TEXTURED_FM})"
        )
        todo = [(lab, cfg) for lab, cfg in todo if lab["setting"] != "textured"]
    return walk(todo, "defense_study", profile, "batch", budget_minutes, tables_dir=tables_dir, log=log, **kw)


def verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """H1–H3 each with its verdict (the rules above) on the study's table."""
    choice = h3_choice(df)
    return pd.DataFrame(
        [
            {"hypothesis": "H1", "verdict": h1(df)[0]},
            {"hypothesis": "H2", "verdict": h2(df)[0]},
            {"hypothesis": "H3", "verdict": h3(df, choice)[0], "variant": choice},
        ]
    )


def cell_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The protocol's per-cell analysis: per hypothesis × setting × defense × half, the seeds, mean final ASR with a
    logit-scale and a percentile-bootstrap 95 % interval, "k of n seeds ≤ 0.10" with its Clopper–Pearson interval,
    the ASR over the last rounds (``asr_last_k``) and the mean ACC."""
    from ..stats import bootstrap_interval, logit_interval

    ok = ok_rows(df)
    rows = []
    for (h, setting, defense, half), g in ok.groupby(["hypothesis", "setting", "defense", "half"], sort=False):
        centre, lo, hi = logit_interval(g["asr"])
        blo, bhi = bootstrap_interval(g["asr"])
        below = k_of_n_below(g["asr"])
        last = g["asr_last_k"].mean() if "asr_last_k" in g else float("nan")
        rows.append(
            dict(hypothesis=h, setting=setting, defense=defense, half=half, n=len(g), asr=g["asr"].mean(),
                 logit_lo=lo, logit_hi=hi, boot_lo=blo, boot_hi=bhi, asr_last=last, acc=g["acc"].mean(),
                 seeds=seed_list(g["seed"]), **{f"below_{k}": v for k, v in below.items()})
        )  # fmt: skip
    return pd.DataFrame(rows)


def _f(x, fmt: str = ".3f") -> str:
    return "–" if pd.isna(x) else format(x, fmt)


def study_markdown(profile: str = "quick", tables_dir=None) -> str:
    """The defense study in the docs: every cell run so far (the protocol's per-cell analysis), then each
    hypothesis's comparisons with their paired statistics and its verdict."""
    from ..tables import read_optional

    df = read_optional("defense_study", profile, tables_dir)
    if df is None or df.empty:
        return "_Not run yet: `python -m paper_repro.studies.defense_study --budget 60 --jobs 2`._"
    lines = [
        "| hypothesis | setting | defense | test half | seeds | ASR | logit 95 % | bootstrap 95 % | ≤ 0.10 (k/n) "
        "[Clopper–Pearson] | ASR, last rounds | ACC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cell_summary(df).to_dict("records"):
        lines.append(
            f"| {r['hypothesis']} | {r['setting']} | {r['defense']} | {r['half']} | {r['seeds']} | {_f(r['asr'])} | "
            f"[{_f(r['logit_lo'])}, {_f(r['logit_hi'])}] | [{_f(r['boot_lo'])}, {_f(r['boot_hi'])}] | "
            f"{r['below_k']}/{r['below_n']} [{_f(r['below_share_lo'], '.2f')}, "
            f"{_f(r['below_share_hi'], '.2f')}] | {_f(r['asr_last'])} | {_f(r['acc'])} |"
        )
    v1, res1 = h1(df)
    v2, res2 = h2(df)
    choice = h3_choice(df)
    v3, res3 = h3(df, choice)
    lines += ["", f"**H1: {v1}.** Paired D = ASR(none) − ASR(act_bound) at the corner minus at each placement:", ""]
    if len(res1):
        lines += ["| placement | seeds | D(corner) − D(placement) [95 % t] | paired t p | Holm p | exact p | "
                  "act_bound ≤ 0.10 (k/n) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in res1.to_dict("records"):
            lines.append(
                f"| {r['setting']} | {r['n']} | {r['diff']:+.3f} [{_f(r['lo'], '+.3f')}, {_f(r['hi'], '+.3f')}] | "
                f"{_f(r['p_t'], '.3g')} | {_f(r['p_holm'], '.3g')} | {_f(r['p_exact'], '.3g')} | "
                f"{r['below_k']}/{r['below_n']} |"
            )
    lines += ["", f"**H2: {v2}.** Paired rise ASR(variant) − ASR(none) per amplified attack:", ""]
    if len(res2):
        lines += ["| attack | variant | seeds | rise [95 % t] | paired t p | Holm p | exact p |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in res2.to_dict("records"):
            lines.append(
                f"| {r['attack']} | {r['defense']} | {r['n']} | {r['diff']:+.3f} [{_f(r['lo'], '+.3f')}, "
                f"{_f(r['hi'], '+.3f')}] | {_f(r['p_t'], '.3g')} | {_f(r['p_holm'], '.3g')} | "
                f"{_f(r['p_exact'], '.3g')} |"
            )
    lines += ["", f"**H3: {v3}** (variant chosen on the selection cells: {choice or 'none yet'})."]
    if len(res3):
        lines += ["", "| setting | seeds | reduction [95 % t] | paired t p | ACC cost |", "|---|---|---|---|---|"]
        for r in res3.to_dict("records"):
            lines.append(
                f"| {r['setting']} | {r['n']} | {r['diff']:+.3f} [{_f(r['lo'], '+.3f')}, {_f(r['hi'], '+.3f')}] | "
                f"{_f(r['p_t'], '.3g')} | {100 * r['cost']:.1f} pt |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m paper_repro.studies.defense_study [--budget MINUTES] [--jobs N]``: continue the study through the
    run ledger, then print the verdicts."""
    import argparse

    from ..cliargs import pos_float, pos_int
    from ..options import RunOptions

    p = argparse.ArgumentParser(prog="python -m paper_repro.studies.defense_study")
    p.add_argument("--budget", type=pos_float, default=60.0, metavar="MINUTES", help="start no batch ending later")
    p.add_argument("--jobs", type=pos_int, default=1, help="runs side by side in worker processes")
    a = p.parse_args(argv)
    df = run("quick", a.budget, options=RunOptions.for_profile("quick", jobs=a.jobs, ledger=True))
    print(verdicts(df).to_string(index=False) if len(df) else "no cell run yet")


if __name__ == "__main__":
    main()
