"""The pre-registered defense study: its cells vary what the protocol says they vary, and its decision rules give
the verdicts the protocol states on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paper_repro.studies import defense_study as ds

pytestmark = pytest.mark.unit


def test_cells_vary_the_fm_draw_and_the_fitting_subset_and_measure_on_the_odd_half():
    cells = ds.cells("quick")
    by = {(lab["hypothesis"], lab["setting"], lab["defense"], lab["seed"]): cfg for lab, cfg in cells}
    a, b = by[("H1", "corner", "act_bound", 10)], by[("H1", "corner", "act_bound", 11)]
    assert (a.fm.sample_seed, b.fm.sample_seed) == (10, 11) and a.data.test_half == "odd"
    assert a.defense.params["fit_draw"] == "run"
    assert by[("H1", "centre", "none", 12)].attack.trigger_position == "centre"
    t = by[("H1", "textured", "act_bound", 19)]
    assert t.data.dataset == "fashion_mnist_textured" and t.fm.checkpoint == ds.TEXTURED_FM
    assert len({k[3] for k in by if k[:3] == ("H1", "corner", "none")}) == 10  # headline: ten seeds
    assert len({k[3] for k in by if k[:3] == ("H1", "garment", "none")}) == 5
    base = by[("H1", "textured", ds.TEXTURED_BASELINE, 14)]  # the validation setting's best baseline, five seeds
    assert base.data.dataset == "fashion_mnist_textured" and base.defense.params["fit_draw"] == "run"
    assert len({k[3] for k in by if k[:3] == ("H1", "textured", ds.TEXTURED_BASELINE)}) == 5
    sel = [lab for lab, _ in cells if lab["hypothesis"] == "H3 selection"]
    assert {lab["half"] for lab in sel} == {"even"} and {lab["seed"] for lab in sel} == {0, 1, 2}
    assert not any(lab["hypothesis"] == "H3" for lab, _ in cells)  # held-out H3 cells wait for the choice
    chosen = ds.cells("quick", "act_bound fusion both")
    h3 = [cfg for lab, cfg in chosen if lab["hypothesis"] == "H3" and lab["defense"] == "act_bound fusion both"]
    assert h3 and all(c.defense.params["fusion"] == "both" and c.data.test_half == "odd" for c in h3)
    lab = next(lab for lab, _ in cells if lab["setting"] == "SIG")
    assert ds.labels_config("quick", lab) == next(cfg for la, cfg in cells if la == lab)


def _rows(setting, none, defended, defense="act_bound", hypothesis="H1"):
    return [
        {"hypothesis": hypothesis, "setting": setting, "defense": d, "half": "odd", "seed": s, "asr": v, "acc": 0.8}
        for s, (n, x) in enumerate(zip(none, defended), start=10)
        for d, v in (("none", n), (defense, x))
    ]


def test_h1_holds_when_only_the_corner_is_defended_and_fails_when_a_busy_placement_is():
    corner = _rows("corner", [0.95, 0.93, 0.94, 0.96, 0.92], [0.05, 0.08, 0.04, 0.06, 0.07])
    busy = [
        _rows(p, [0.94, 0.95, 0.93, 0.96, 0.95], [0.90, 0.93, 0.85, 0.92, 0.91])
        for p in ("centre", "garment", "textured")
    ]
    df = pd.DataFrame(corner + sum(busy, [])).assign(status="ok")
    verdict, res = ds.h1(df)
    assert verdict == "holds" and (res["diff"] > 0.8).all() and (res["p_holm"] >= res["p_t"]).all()
    defended = pd.DataFrame(corner + _rows("centre", [0.9] * 5, [0.05, 0.02, 0.5, 0.03, 0.01])).assign(status="ok")
    assert ds.h1(defended)[0] == "does not hold"  # 4 of 5 seeds at ≤ 0.10 away from the background
    assert ds.h1(pd.DataFrame(corner).assign(status="ok"))[0] == "not run"


def test_h2_needs_the_rise_with_relu3_bounds_and_none_with_relu2_or_class_bounds():
    rises = {"act_bound": 0.2, "act_bound relu3 only": 0.2, "act_bound relu2 only": 0.0, "act_bound_cc": -0.01}
    rng = np.random.default_rng(0)
    rows = []
    for s in range(10, 15):
        base = 0.3 + rng.normal(0, 0.02)
        rows.append({"setting": "SIG", "defense": "none", "half": "odd", "seed": s, "asr": base})
        for d, r in rises.items():
            rows.append(
                {"setting": "SIG", "defense": d, "half": "odd", "seed": s, "asr": base + r + rng.normal(0, 0.01)}
            )
    df = pd.DataFrame(rows).assign(status="ok", hypothesis="H2")
    assert ds.h2(df)[0] == "holds"
    worse = df.copy()
    worse.loc[worse["defense"] == "act_bound relu2 only", "asr"] += 0.2
    assert ds.h2(worse)[0] == "does not hold"


def test_h3_is_chosen_on_the_selection_half_within_the_acc_budget():
    rows = []
    for s in (0, 1, 2):
        for d, asr, acc in [
            ("none", 0.9, 0.80),
            ("act_bound fusion teachers", 0.5, 0.79),
            ("act_bound fusion both", 0.1, 0.70),  # ten points: beyond the budget
        ]:
            rows.append({"hypothesis": "H3 selection", "setting": "corner", "defense": d, "seed": s, "asr": asr})
            rows[-1] |= {"acc": acc, "half": "even", "status": "ok"}
    assert ds.h3_choice(pd.DataFrame(rows)) == "act_bound fusion teachers"
    assert ds.k_of_n_below([0.05, 0.2, 0.01])["k"] == 2


def test_the_study_block_gives_each_cell_its_intervals_and_each_hypothesis_its_verdict(tmp_path):
    corner = _rows("corner", [0.95, 0.93, 0.94, 0.96, 0.92], [0.05, 0.08, 0.04, 0.06, 0.20])
    centre = _rows("centre", [0.94, 0.95, 0.93, 0.96, 0.95], [0.90, 0.93, 0.85, 0.92, 0.91])
    df = pd.DataFrame(corner + centre).assign(status="ok", asr_last_k=0.5)
    df.to_csv(tmp_path / "defense_study_quick.csv", index=False)
    summary = ds.cell_summary(df).set_index(["setting", "defense"])
    cell = summary.loc[("corner", "act_bound")]
    assert (cell["n"], cell["below_k"], cell["below_n"]) == (5, 4, 5)
    assert cell["logit_lo"] < cell["asr"] < cell["logit_hi"] and 0 < cell["logit_lo"]  # inside (0, 1), no clipping
    assert cell["boot_lo"] >= 0.04 and cell["boot_hi"] <= 0.20  # within the data's range
    text = ds.study_markdown(tables_dir=tmp_path)
    assert "| H1 | corner | act_bound | odd | 10, 11, 12, 13, 14 | 0.086 |" in text
    assert "**H1: undecided.**" in text  # the garment and textured placements are not run yet
    assert "| centre | 5 |" in text and "**H3: not run**" in text
    assert ds.study_markdown(tables_dir=tmp_path / "none").startswith("_Not run yet")


def test_the_study_figure_joins_each_seeds_points_and_keeps_the_defenses_order():
    import matplotlib

    matplotlib.use("Agg")
    from paper_repro import study_plots

    df = pd.DataFrame(_rows("corner", [0.9, 0.8, 0.7], [0.1, 0.2, 0.3]) + _rows("centre", [0.9] * 3, [0.8] * 3))
    fig = study_plots.paired_seeds(df, ["centre", "corner", "textured"], ["none", "act_bound"], busy={"corner": 0.097})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(" (")[0] for ax in panels] == ["centre", "corner"]  # textured not run: no panel
    assert "busy region: 10% of test images" in panels[1].get_title()
    corner_lines = [np.asarray(ln.get_ydata()).tolist() for ln in panels[1].get_lines() if ln.get_marker() == "o"]
    assert sorted(corner_lines) == [[0.7, 0.3], [0.8, 0.2], [0.9, 0.1]]  # one line per seed, none → act_bound


def test_the_textured_baseline_is_what_the_best_defense_rule_picks_on_the_committed_grid():
    from paper_repro.tables import best_defense, read_table

    g = read_table("grid", "quick")
    fm = g[(g["partition"] == "dirichlet0.5") & (g["attack"] == "fm") & (g["defense"] != "act_bound")]
    assert best_defense(fm)["best"].item() == ds.TEXTURED_BASELINE
