"""The claims table's rules (paper_repro/studies/claims.py) on cells computed by hand, and the table drawn from the
committed tables names every claim once with a verdict of the four kinds."""

from __future__ import annotations

import pandas as pd
import pytest

from paper_repro.studies import claims

pytestmark = pytest.mark.unit


def _rows(asr, acc, seeds=(10, 11, 12, 13, 14)):
    return pd.DataFrame({"seed": list(seeds), "asr": asr, "acc": acc})


def test_stops_needs_every_seed_at_the_target_and_the_paired_cost_within_two_points():
    none = _rows([0.9] * 5, [0.82, 0.83, 0.84, 0.85, 0.86])
    # ASR ≤ 0.10 on all five seeds; cost per seed 0.01 → 1.0 point
    v, ev = claims.stops(_rows([0.05, 0.02, 0.10, 0.08, 0.01], [0.81, 0.82, 0.83, 0.84, 0.85]), none)
    assert v == "holds" and "5 of 5 seeds ≤ 0.10" in ev and "ACC cost 1.0 points" in ev
    # one seed at 0.104 misses the target
    v, _ = claims.stops(_rows([0.05, 0.02, 0.104, 0.08, 0.01], [0.81, 0.82, 0.83, 0.84, 0.85]), none)
    assert v == "does not hold"
    # every seed below, but the cost 2.5 points
    v, ev = claims.stops(_rows([0.05] * 5, [0.795, 0.805, 0.815, 0.825, 0.835]), none)
    assert v == "does not hold" and "2.5 points" in ev
    # three seeds: no verdict, the tentative one shown
    v, _ = claims.stops(_rows([0.05] * 3, [0.81] * 3, (10, 11, 12)), none)
    assert v == "undecided (3 < 5 seeds; as they stand: holds)"
    assert claims.stops(_rows([], [], ()), none)[0] == "not run"


def test_the_committed_claims_table_names_every_claim_once():
    t = claims.claims_table()
    assert sorted(t["claim"]) == sorted(claims.CLAIMS)
    kinds = ("holds", "does not hold", "undecided", "not run")
    assert t["verdict"].map(lambda v: v.startswith(kinds)).all(), t["verdict"].tolist()


def test_stops_is_paired_on_the_shared_seeds_and_not_run_without_a_baseline():
    none = _rows([0.9] * 3, [0.82] * 3, (10, 11, 12))
    # seeds 13 and 14 have no baseline: they are left out (n = 3 shared seeds), however bad they are
    d = _rows([0.05, 0.05, 0.05, 0.9, 0.9], [0.81] * 5)
    v, ev = claims.stops(d, none)
    assert v == "undecided (3 < 5 seeds; as they stand: holds)" and "3 of 3 seeds" in ev
    assert claims.stops(d, _rows([], [], ()))[0] == "not run"


def _grid(defense_asr: dict, none_asr=0.95, seeds=(0, 1, 2, 3, 4)):
    rows = []
    for d, asr in {"none": none_asr, **defense_asr}.items():
        for s in seeds:
            rows.append(dict(attack="fm", partition="dirichlet0.5", defense=d, seed=s, asr=asr, acc=0.8))
    return pd.DataFrame(rows)


def test_p2_needs_an_attack_that_works_and_fails_when_one_update_defense_stops_it():
    every = {d: 0.9 for d in claims.UPDATE_COMPARING}
    assert claims.p2(_grid({**every, "flame": 0.85}))[0] == "holds"
    assert claims.p2(_grid({"median": 0.9, "flame": 0.85}))[0].startswith("undecided (not run yet: norm_clip")
    v, ev = claims.p2(_grid({"median": 0.9, "flame": 0.05}))
    assert v == "does not hold" and "stopped by flame" in ev
    assert claims.p2(_grid({"median": 0.9}, none_asr=0.5))[0].startswith("undecided (the attack does not work")
    assert claims.p2(_grid({"act_bound": 0.05}))[0] == "not run"  # no update-comparing defense in the table


def _calibrated(cells: dict, seeds=(10, 11, 12, 13, 14)):
    rows = []
    for (attack, defense), asr in cells.items():
        for s in seeds:
            rows.append(dict(attack=attack, defense=defense, seed=s, asr=asr, acc=0.8))
    return pd.DataFrame(rows)


def test_p5_rests_on_the_working_fm_attacks_only():
    rung = {"FM patch": ("calibrated", "r"), "FM SIG": ("calibrated", "r"), "FM random": ("weak", "r")}
    stopped = {("FM patch", "none"): 0.9, ("FM patch", "act_bound"): 0.02}
    stopped |= {("FM SIG", "none"): 0.9, ("FM SIG", "act_bound"): 0.03}
    # the weak attack is not stopped, and carries no claim
    both = _calibrated(stopped | {("FM random", "none"): 0.3, ("FM random", "act_bound"): 0.5})
    assert claims.p5(rung, both)[0] == "holds"
    missed = _calibrated(stopped | {("FM SIG", "act_bound"): 0.5})
    assert claims.p5(rung, missed)[0] == "does not hold"
    one = {"FM patch": ("calibrated", "r"), "FM random": ("weak", "r")}
    assert claims.p5(one, both)[0] == "undecided (one working FM trigger)"
    only_patch = _calibrated({k: v for k, v in stopped.items() if k[0] == "FM patch"})
    assert claims.p5(rung, only_patch)[0] == "undecided (not run on every working FM attack)"
    assert claims.p5(rung, _calibrated({("FM patch", "none"): 0.9}))[0] == "not run"


def test_p2_counts_a_variant_label_by_its_defense_and_reads_the_calibrated_breadth_first():
    rows = []
    for d, asr in {"none": 0.95, "dp sigma0.01": 0.05, "act_bound": 0.05}.items():
        for s in (10, 11, 12, 13, 14):
            rows.append(dict(attack="FM patch", defense=d, seed=s, asr=asr, acc=0.8))
    cells = pd.DataFrame(rows)
    v, ev = claims.p2_cells(cells, "FM patch")
    # dp at the sweep's sigma is an update-comparing defense; act_bound is not one (not counted, not named)
    assert v == "does not hold" and "stopped by dp sigma0.01" in ev and "1 update-comparing" in ev
    assert claims.p2_cells(cells[cells["defense"] != "dp sigma0.01"], "FM patch")[0] == "not run"
    # none of those run stops it, but "none stops it" needs every update-comparing defense run
    cells.loc[cells["defense"] == "dp sigma0.01", "asr"] = 0.9
    v, _ = claims.p2_cells(cells, "FM patch")
    assert v.startswith("undecided (not run yet: norm_clip, krum,") and "dp" not in v.split("yet:")[1]
