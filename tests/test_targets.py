"""The stated targets, asserted on the committed tables (``data/tables/grid_quick.csv``, every seed in it).

A target: ``act_bound`` brings the ASR of both attacks to ≤ 0.10 on every seed, at a clean-ACC cost of ≤ 2 points
(mean over seeds, against no defense under the same attack, partition and seed). A cell that misses a target is a
known miss: a strict expected failure whose reason gives the measured numbers, so CI stays green, the miss stays
visible, and the marker must come off (the strict xfail then fails) once the method meets it. The list of misses is
written by hand, never derived from the numbers; ``tests/test_claims.py`` checks that the current code reproduces the
committed seed-0 cells.
"""

from __future__ import annotations

import pytest

from paper_repro.tables import read_table

ASR_TARGET, ACC_COST_TARGET = 0.10, 0.02
PARTITIONS = ("iid", "dirichlet0.5")
UPDATE_COMPARING = ("norm_clip", "dp", "krum", "multi_krum", "median", "trimmed_mean", "flame", "foolsgold", "mars")

# (test, attack, partition): cells whose committed numbers miss the target
KNOWN_MISSES = {
    ("asr", "fm", "iid"),
    ("asr", "classic", "iid"),
    ("acc", "fm", "iid"),
    ("acc", "classic", "iid"),
    ("acc", "classic", "dirichlet0.5"),
    ("median", "classic", "iid"),
    ("median", "classic", "dirichlet0.5"),
}


def _grid():
    return read_table("grid", "quick")


def _cell(defense: str, attack: str, partition: str):
    g = _grid()
    return g[(g.defense == defense) & (g.attack == attack) & (g.partition == partition)].set_index("seed")


def _cost(attack: str, partition: str):
    d, n = _cell("act_bound", attack, partition), _cell("none", attack, partition)
    return (n["acc"] - d["acc"]).dropna()


def _case(test: str, attack: str, partition: str, measured, values=None):
    marks = []
    if (test, attack, partition) in KNOWN_MISSES:
        marks = [pytest.mark.xfail(strict=True, reason=f"known miss, measured {measured()}")]
    values = values or (attack, partition)
    return pytest.param(*values, marks=marks, id="-".join(values))


def _asr_text(defense, attack, partition):
    return lambda: "ASR per seed " + ", ".join(f"{v:.3f}" for v in _cell(defense, attack, partition)["asr"])


ASR_CASES = [_case("asr", a, p, _asr_text("act_bound", a, p)) for a in ("fm", "classic") for p in PARTITIONS]
ACC_CASES = [
    _case(
        "acc",
        a,
        p,
        lambda a=a, p=p: (
            f"ACC cost {_cost(a, p).mean():.3f} (per seed " + ", ".join(f"{v:.3f}" for v in _cost(a, p)) + ")"
        ),
    )
    for a in ("fm", "classic")
    for p in PARTITIONS
]
MEDIAN_CASES = [_case("median", "classic", p, _asr_text("median", "classic", p), values=(p,)) for p in PARTITIONS]


@pytest.mark.parametrize("attack, partition", ASR_CASES)
def test_act_bound_brings_asr_to_the_target_on_every_seed(attack, partition):
    asr = _cell("act_bound", attack, partition)["asr"]
    assert len(asr) >= 3 and (asr <= ASR_TARGET).all()


@pytest.mark.parametrize("attack, partition", ACC_CASES)
def test_act_bound_costs_at_most_two_points_of_clean_accuracy(attack, partition):
    cost = _cost(attack, partition)
    assert len(cost) >= 3 and cost.mean() <= ACC_COST_TARGET


@pytest.mark.parametrize("partition", PARTITIONS)
def test_the_fm_attack_plants_the_backdoor_on_every_seed_without_costing_accuracy(partition):
    fm, clean = _cell("none", "fm", partition), _cell("none", "none", partition)
    assert (fm["asr"] >= 0.90).all()
    assert (clean["acc"] - fm["acc"]).mean() <= ACC_COST_TARGET


@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("defense", UPDATE_COMPARING)
def test_update_comparing_defenses_leave_the_fm_backdoor_in_place(defense, partition):
    """The paper's point: no client is malicious, so defenses that compare client updates find nothing."""
    assert (_cell(defense, "fm", partition)["asr"] >= 0.80).all()


@pytest.mark.parametrize("partition", MEDIAN_CASES)
def test_the_median_stops_the_classic_attack_on_every_seed(partition):
    assert (_cell("median", "classic", partition)["asr"] <= ASR_TARGET).all()
