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
