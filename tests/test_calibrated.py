"""After calibration: the frozen rungs on held-out seeds, and the client-attack studies (replacement against
poisoning with and without fusion; Neurotoxin's durability), their cells and their paired verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paper_repro.studies import calibrated
from paper_repro.studies import calibration as cal


def _frozen(**chosen_step) -> pd.DataFrame:
    return pd.DataFrame(
        [{"attack": a, "verdict": "calibrated", "chosen": cal.LADDERS[a][i].label} for a, i in chosen_step.items()]
    )


@pytest.mark.unit
def test_client_cells_compare_like_with_like():
    frozen = _frozen(**{"model replacement": 1, "classic": 2, "Neurotoxin": 3})  # γ = n; boost 5; boost 10
    cells = {(lab["arm"], lab["seed"]): cfg for lab, cfg in calibrated.client_cells("quick", frozen, (10, 11))}
    mr, dp = cells[("model replacement, fusion", 10)].attack, cells[("data poisoning, fusion", 10)].attack
    assert (mr.kind, dp.kind) == ("model_replacement", "classic")
    # the same share, schedule and attackers per round; poisoning unscaled (boost 1), replacement at γ = n
    for key in ("client_poison_ratio", "schedule", "attackers_per_round", "num_malicious", "last_round"):
        assert getattr(mr, key) == getattr(dp, key), key
    assert mr.client_poison_ratio == 1.0 and dp.boost == 1.0
    assert cells[("model replacement, FedAvg", 10)].fl.fusion is False
    assert cells[("model replacement, fusion", 10)].fl.fusion is True
    nt, cl = cells[("Neurotoxin", 11)].attack, cells[("classic", 11)].attack
    assert (nt.kind, cl.kind) == ("neurotoxin", "classic") and nt.last_round == cl.last_round == 5  # 10 rounds
    labels = {lab["arm"]: lab for lab, _ in calibrated.client_cells("quick", frozen, (10,))}
    assert labels["Neurotoxin"]["last_round"] == 5 and labels["model replacement, fusion"]["last_round"] == 0
    assert (nt.boost, nt.client_poison_ratio) == (cl.boost, cl.client_poison_ratio) == (5.0, 1.0)  # classic's rung
    nt10 = cells[("Neurotoxin at Neurotoxin's rung", 10)].attack
    assert (nt10.kind, nt10.boost) == ("neurotoxin", 10.0)
    assert cells[("classic at Neurotoxin's rung", 10)].attack.kind == "classic"
    with pytest.raises(ValueError, match="no frozen rung yet"):
        calibrated.client_cells("quick", frozen[frozen["attack"] == "classic"], (10,))


@pytest.mark.unit
def test_durability_columns_read_the_rounds_after_the_stop():
    h = pd.DataFrame({"round": [0, 1, 2, 3, 4], "asr": [0.1, 0.9, 0.8, 0.4, 0.2]})
    assert calibrated.durability_columns(2, h) == {"asr_at_stop": 0.8, "asr_after_stop": pytest.approx(0.3)}
    assert np.isnan(calibrated.durability_columns(0, h)["asr_after_stop"])


@pytest.mark.unit
def test_client_verdicts_are_paired_and_holm_corrected():
    seeds = [10, 11, 12, 13, 14]
    rows = []
    for s, (mr, dp, mrf, dpf, nt, cl) in zip(
        seeds,
        [
            (0.99, 0.40, 0.50, 0.45, 0.30, 0.10),
            (0.98, 0.50, 0.60, 0.60, 0.35, 0.15),
            (0.97, 0.45, 0.55, 0.50, 0.20, 0.25),
            (0.99, 0.55, 0.45, 0.50, 0.40, 0.20),
            (0.96, 0.35, 0.52, 0.48, 0.25, 0.30),
        ],
    ):
        for arm, v in [
            ("model replacement, FedAvg", mr),
            ("data poisoning, FedAvg", dp),
            ("model replacement, fusion", mrf),
            ("data poisoning, fusion", dpf),
        ]:
            rows.append({"arm": arm, "seed": s, "asr": v, "asr_after_stop": np.nan, "status": "ok"})
        rows += [
            {"arm": "Neurotoxin", "seed": s, "asr": 0, "asr_after_stop": nt, "status": "ok"},
            {"arm": "classic", "seed": s, "asr": 0, "asr_after_stop": cl, "status": "ok"},
        ]
    v = calibrated.client_verdicts(pd.DataFrame(rows)).set_index("comparison")
    assert v.loc["R1 replacement beats poisoning under FedAvg", "verdict"] == "holds"  # +0.52 on every seed
    assert v.loc["R2 fusion weakens replacement", "verdict"] == "holds"
    assert v.loc["R3 replacement beats poisoning under fusion", "verdict"] == "undecided"  # +0.02, mixed signs
    assert v.loc["N1 Neurotoxin lasts longer", "diff"] == pytest.approx(0.1)
    ran = v[v["verdict"] != "not run"]
    assert (ran["p_holm"] >= ran["p_t"]).all() and v.loc[
        "N1b Neurotoxin lasts longer at its own rung", "verdict"
    ] == "not run"
    assert calibrated.client_verdicts(pd.DataFrame(rows[:2]))["verdict"].eq("not run").sum() >= 2


@pytest.mark.smoke
def test_the_studies_walk_within_their_budget_and_continue(tmp_path, monkeypatch):
    ladders = {
        "toy": [cal.Rung("share 0.4", {"kind": "fm", "poison_ratio": 0.4}, 255)],
        "toy2": [cal.Rung("share 0.3", {"kind": "fm", "poison_ratio": 0.3}, 255)],  # other runs: not served by toy's
    }
    monkeypatch.setattr(cal, "LADDERS", ladders)
    monkeypatch.setattr(calibrated, "LADDERS", cal.LADDERS)
    frozen = pd.DataFrame(
        [{"attack": a, "verdict": "calibrated", "chosen": ladders[a][0].label} for a in ("toy", "toy2")]
    )
    monkeypatch.setattr(calibrated, "frozen_rungs", lambda profile, tables_dir=None: frozen)
    ticks = iter(range(0, 10**6, 1000))  # each reading 1000 s later: after one batch the budget is spent
    where = dict(seeds=(0, 1), tables_dir=tmp_path, results_dir=tmp_path / "res", progress=False, log=lambda m: None)
    first = calibrated.calibrated_heldout("smoke", budget_minutes=30, clock=lambda: next(ticks), **where)
    assert set(first["attack"]) == {"toy"} and len(first) == 2
    rest = calibrated.calibrated_heldout("smoke", budget_minutes=600, **where)
    assert list(rest["attack"]) == ["toy", "toy", "toy2", "toy2"] and rest["asr"].between(0, 1).all()
    assert list(rest["run"][:2]) == list(first["run"])  # served, not made again
    from paper_repro.tables import read_table

    assert len(read_table("attack_calibrated", "smoke", tmp_path)) == 4
    from paper_repro.ledger import config_key
    from paper_repro.studies.plans import plan

    p = plan("attack_calibrated", "smoke", tmp_path)  # the ledger's recompute rebuilds each row from its labels
    made = calibrated.calibrated_cells("smoke", frozen, ("toy", "toy2"), (0, 1))
    assert [c.key for c in p.cells] == [config_key(cfg.to_dict()) for _, cfg in made]


@pytest.mark.unit
def test_calibration_markdown_draws_the_frozen_rung_and_its_heldout_seeds(tmp_path):
    from paper_repro.tables import write_csv

    lad = cal.LADDERS["classic"]
    val = [
        {"attack": "classic", "rung": lad[i].label, "seed": s, "asr": a, "asr_round0": 0.01, "acc": 0.8, "status": "ok"}
        for i, a in ((0, 0.5), (1, 0.9))
        for s in cal.VALIDATION_SEEDS
    ]
    write_csv(pd.DataFrame(val), tmp_path / "attack_calibration_quick.csv")
    held = [
        {
            "attack": "classic",
            "rung": lad[1].label,
            "verdict": "calibrated",
            "defense": "none",
            "seed": s,
            "asr": a,
            "asr_round0": 0.0,
            "acc": 0.8,
            "attackers_mean": 1.0,
            "status": "ok",
        }
        for s, a in ((10, 0.8), (11, 1.0))
    ]
    write_csv(pd.DataFrame(held), tmp_path / "attack_calibrated_quick.csv")
    rows = {r.split(" | ")[0].strip("| "): r for r in calibrated.calibration_markdown("quick", tmp_path).splitlines()}
    # the first rung reaching 0.8 is frozen; its held-out mean (0.8 + 1.0) / 2 with the bootstrap's range [0.8, 1.0]
    assert f"| classic | calibrated | {lad[1].label} | 0.900 (0.010) | 0.900 [0.800, 1.000] |" in rows["classic"]
    assert rows["classic"].endswith("| 0.000 | 0.800 | 1.000 | 10, 11 |")
    assert "| DBA | undecided | – |" in rows["DBA"]  # no rung run
    assert "Not run yet" in calibrated.clients_markdown("quick", tmp_path)


@pytest.mark.unit
def test_breadth_markdown_gives_asr_seeds_at_target_and_paired_cost(tmp_path):
    from paper_repro.tables import write_csv

    rows = [
        {"attack": "classic", "rung": "r", "verdict": "calibrated", "defense": d, "seed": s, "asr": a, "acc": c}
        for d, s, a, c in (
            ("none", 10, 0.9, 0.80),
            ("none", 11, 0.8, 0.82),
            ("act_bound", 10, 0.05, 0.78),
            ("act_bound", 11, 0.2, 0.81),
        )
    ]
    assert "No defense run" in calibrated.breadth_markdown("quick", tmp_path / "none")  # no table at all
    write_csv(pd.DataFrame(rows), tmp_path / "attack_calibrated_quick.csv")
    text = calibrated.breadth_markdown("quick", tmp_path)
    # mean ASR (0.05 + 0.2) / 2; one seed of two ≤ 0.10; cost ((0.80 − 0.78) + (0.82 − 0.81)) / 2 = 1.5 points
    assert "| classic | 0.850 | 0.125 (1/2 ≤ 0.10; +1.5 pt) |" in text
