"""The attack calibration (docs/protocol.md): the clean-label FM attack, the ladders against their stealth limits, the
rule's verdicts on hand-made tables, and a resumable walk up a toy ladder in the smoke profile."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import paper_repro as pr
from paper_repro.attacks import build
from paper_repro.attacks.base import config_trigger
from paper_repro.data import ImageSet
from paper_repro.studies import calibration as cal
from paper_repro.tables import read_table


@pytest.mark.unit
def test_the_clean_label_attack_triggers_only_target_images_and_keeps_every_label():
    rng = np.random.default_rng(0)
    clean = ImageSet(
        rng.integers(0, 200, (100, 1, 28, 28), dtype=np.uint8), np.repeat(np.arange(10), 10), tuple("abcdefghij")
    )
    cfg = pr.load_config(
        "quick",
        attack={
            "kind": "fm_clean_label",
            "trigger": "sig",
            "blend_alpha": 0.08,
            "poison_ratio": 0.5,
            "target_class": 3,
        },
    )
    init, kd, idx = build(cfg).poison_synthetic(clean)
    assert len(idx) == 5 and set(clean.y[idx]) == {3}  # half of the ten target images
    np.testing.assert_array_equal(init.y, clean.y)  # clean label: no label changes
    changed = np.flatnonzero((init.x != clean.x).reshape(100, -1).any(1))
    np.testing.assert_array_equal(changed, idx)  # only the chosen target images carry the trigger
    assert kd is init and clean.x.flags.writeable is False


@pytest.mark.unit
def test_a_clean_label_attack_cannot_be_all_to_all():
    with pytest.raises(ValueError, match="clean-label attack keeps every label"):
        pr.load_config("quick", attack={"kind": "fm_clean_label", "mapping": "all_to_all"})


@pytest.mark.unit
@pytest.mark.parametrize("attack", list(cal.LADDERS))
def test_every_rung_builds_and_stays_within_the_stealth_limits(attack):
    for r in cal.LADDERS[attack]:
        cfg = cal.calibration_config("quick", attack, r.label, 0)
        a = cfg.attack
        assert cfg.defense.name == "none" and cfg.data.partition == "dirichlet"
        assert a.trigger_size <= cal.LIMITS["patch side (px)"]
        if a.kind != "fm_clean_label":  # a clean-label attack may trigger every target image
            assert a.poison_ratio <= cal.LIMITS["poisoned share of a class"]
        if r.linf < 255:
            assert r.linf <= cal.LIMITS["full-image trigger L∞ (of 255)"]
        assert a.params.get("finetune_steps", 0) <= cal.LIMITS["FM fine-tuning steps"]
        assert a.boost <= cal.LIMITS["client update boost"]
        assert a.params.get("max_scale", 0) <= cal.LIMITS["client update boost"]  # an adaptive scale's cap
        if not a.kind.startswith("fm"):  # client attacks: a fixed number of attackers in every round
            assert a.schedule == "fixed"
            assert a.attackers_per_round == (2 if a.kind == "adaptive_decoys" else 1)  # a carrier and a decoy
            if a.kind == "model_replacement":
                assert cfg.attack.boost == 1.0  # unused: its scale is γ = n
        if a.trigger == "sig":  # the declared L∞ is the one the trigger has (measured on a mid-grey image)
            grey = np.full((1, 1, 28, 28), 128, np.uint8)
            linf = np.abs(config_trigger(cfg).apply(grey).astype(int) - 128).max()
            assert abs(linf - r.linf) <= 1, (r.label, linf)
    labels = [r.label for r in cal.LADDERS[attack]]
    assert len(set(labels)) == len(labels)


def _table(asr: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"attack": a, "rung": r, "seed": s, "asr": v, "asr_round0": v / 2, "acc": 0.8, "status": "ok"}
            for (a, r), vals in asr.items()
            for s, v in zip((0, 1, 2), vals)
        ]
    )


@pytest.mark.unit
def test_the_rule_stops_at_the_first_rung_that_works_and_calls_an_attack_weak_only_at_its_last():
    patch = [r.label for r in cal.LADDERS["FM patch"]]
    alla = [r.label for r in cal.LADDERS["FM all-to-all"]]
    df = _table(
        {
            ("FM patch", patch[0]): [0.9, 0.7, 0.75],  # mean 0.783: not yet
            ("FM patch", patch[1]): [0.9, 0.8, 0.75],  # mean 0.817: calibrated here
            **{("FM all-to-all", r): [0.1, 0.2, 0.3] for r in alla},  # every rung run, none works: weak
            ("FM SIG (dirty label)", cal.LADDERS["FM SIG (dirty label)"][0].label): [0.9, 0.9],  # a seed missing
        }
    )
    v = cal.verdicts(df).set_index(["attack", "step"])
    assert v.loc[("FM patch", 1), "verdict"] == "calibrated" and v.loc[("FM patch", 1), "chosen"] == patch[1]
    assert np.isclose(v.loc[("FM patch", 0), "asr"], 0.78333, atol=1e-4)
    assert v.loc[("FM all-to-all", 2), "verdict"] == "weak" and v.loc[("FM all-to-all", 0), "chosen"] == alla[-1]
    undecided = cal.verdicts(df).set_index("attack").loc["FM SIG (dirty label)"]
    assert undecided["verdict"] == "undecided"
    todo = dict(cal.next_rungs(df))
    assert "FM patch" not in todo and "FM all-to-all" not in todo
    assert todo["FM SIG (dirty label)"] == cal.LADDERS["FM SIG (dirty label)"][0].label  # its seeds are not all in
    assert todo["FM random patch"] == cal.LADDERS["FM random patch"][0].label


@pytest.mark.smoke
def test_calibrate_walks_a_ladder_within_its_budget_and_continues_where_it_stopped(tmp_path, monkeypatch):
    ladder = [
        cal.Rung("share 0.05", {"kind": "fm", "poison_ratio": 0.05}, 255),
        cal.Rung("share 0.4", {"kind": "fm", "poison_ratio": 0.4}, 255),
    ]
    monkeypatch.setattr(cal, "LADDERS", {"toy": ladder})
    monkeypatch.setattr(cal, "TARGET_ASR", 1.01)  # unreachable: the walk must run both rungs, then call it weak
    ticks = iter(range(0, 10**6, 1000))  # each clock reading 1000 s later: after one rung the budget is spent
    seeds = (0, 1)
    where = dict(profile="smoke", seeds=seeds, results_dir=tmp_path / "res", tables_dir=tmp_path, progress=False)
    first = cal.calibrate(budget_minutes=30, clock=lambda: next(ticks), log=lambda m: None, **where)
    assert set(first["rung"]) == {"share 0.05"} and len(first) == 2
    assert cal.verdicts(first, seeds)["verdict"].eq("undecided").all()
    shutil.rmtree(tmp_path / "res")  # a new machine: the table is committed, its run folders are gone
    rest = cal.calibrate(budget_minutes=600, log=lambda m: None, **where)
    assert list(rest["rung"]) == ["share 0.05"] * 2 + ["share 0.4"] * 2
    assert rest["asr_round0"].between(0, 1).all() and rest["run"].str.startswith("smoke_fm_none_").all()
    v = cal.verdicts(read_table("attack_calibration", "smoke", tmp_path), seeds)
    assert v["verdict"].eq("weak").all() and v["chosen"].eq("share 0.4").all()
    assert list(rest["run"][:2]) == list(first["run"])  # the first rung's runs are served, not made again


@pytest.mark.smoke
def test_calibrate_remakes_committed_rows_whose_runs_no_current_code_holds(tmp_path, monkeypatch):
    ladder = [cal.Rung("share 0.4", {"kind": "fm", "poison_ratio": 0.4}, 255)]
    monkeypatch.setattr(cal, "LADDERS", {"toy": ladder})
    monkeypatch.setenv("PAPER_REPRO_LEDGER", str(tmp_path / "ledger"))
    where = dict(profile="smoke", seeds=(0,), results_dir=tmp_path / "res", tables_dir=tmp_path, progress=False)
    real = cal.summarise
    # older code: its table rows say ASR 0.5, and its runs are under other keys (here: gone from folder and ledger)
    monkeypatch.setattr(cal, "summarise", lambda h: {**real(h), "asr": 0.5})
    old = cal.calibrate(budget_minutes=600, log=lambda m: None, **where)
    assert old["asr"].tolist() == [0.5]
    monkeypatch.setattr(cal, "summarise", real)
    shutil.rmtree(tmp_path / "res")
    shutil.rmtree(tmp_path / "ledger", ignore_errors=True)  # the smoke profile keeps no ledger
    said = []
    now = cal.calibrate(budget_minutes=600, log=said.append, **where)
    assert any("1 committed rows dropped" in m for m in said)
    assert now["asr"].tolist() != [0.5] and now["asr"].between(0, 1).all()  # made again, not copied
    served = cal.calibrate(budget_minutes=600, log=said.append, **where)
    assert served["asr"].tolist() == now["asr"].tolist() and served["run"].tolist() == now["run"].tolist()


@pytest.mark.unit
def test_the_calibration_figure_draws_one_panel_per_attack_in_the_ladders_order():
    import matplotlib

    matplotlib.use("Agg")
    from paper_repro import study_plots

    df = _table({("FM patch", "share 0.2"): [0.9, 0.8, 0.7], ("FM all-to-all", "share 0.2"): [0.1, 0.2, 0.3]})
    df["step"] = 0
    fig = study_plots.calibration_ladders(df, order=list(cal.LADDERS))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["FM patch", "FM all-to-all"]  # the ladders' order, not the table's


@pytest.mark.unit
def test_the_calibrated_figure_shows_every_seed_with_no_defense_first_and_marks_weak_attacks():
    import matplotlib

    matplotlib.use("Agg")
    from paper_repro import study_plots

    rows = [
        dict(attack=a, defense=d, seed=s, asr=asr + 0.01 * s)
        for a, d, asr in [
            ("FM all-to-all", "act_bound", 0.2),
            ("FM all-to-all", "none", 0.4),
            ("FM patch", "act_bound", 0.05),
            ("FM patch", "none", 0.9),
        ]
        for s in range(5)
    ]
    fig = study_plots.calibrated_seeds(pd.DataFrame(rows), order=list(cal.LADDERS), weak={"FM all-to-all"})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["FM patch", "FM all-to-all (weak)"]
    first = panels[0]
    assert [t.get_text() for t in first.get_xticklabels()] == ["none", "act_bound"]
    points = np.concatenate([c.get_offsets()[:, 1] for c in first.collections])
    assert len(points) == 10 and np.isclose(points.max(), 0.94)  # every seed drawn, none averaged away
