"""Smoke tier: the real code path end to end on tiny data, every attack kind."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import paper_repro as pr
from paper_repro.fm import FMCheckpointError
from paper_repro.replay import Trajectory, replay_federated
from paper_repro.results import run_key


def _run(tmp_path, progress=False, **kw):
    return pr.run_experiment(pr.load_config("smoke", **kw), results_dir=tmp_path, progress=progress)


@pytest.mark.parametrize("kind", ["none", "classic", "fm", "both"])
def test_every_attack_kind_runs_and_saves_a_run_folder(tmp_path, kind):
    res = _run(tmp_path, attack={"kind": kind, "boost": 2.0})
    h = res.history
    assert list(h["round"]) == [0, 1, 2]
    assert h[["acc", "asr"]].notna().all().all() and h["acc"].between(0, 1).all()
    assert {"local_seconds", "fusion_seconds", "defense_seconds", "eval_seconds"} <= set(h.columns)
    assert set(res.final) >= {"acc", "asr", "round"}
    saved = pd.read_csv(res.run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(saved, h, check_dtype=False)
    meta = json.loads((res.run_dir / "config.json").read_text())
    assert meta["config"]["attack"]["kind"] == kind and "synthetic" in meta["hashes"]
    idx = np.load(res.run_dir / "indices.npz")
    assert (len(idx["fm_poisoned"]) > 0) == (kind in ("fm", "both"))
    assert (len(idx["malicious"]) == 1) == (kind in ("classic", "both"))
    if kind in ("classic", "both"):
        assert any(k.startswith("client_poisoned_") for k in idx.files)


def test_same_seed_same_metrics_and_rerun_is_a_cache_hit(tmp_path):
    a = _run(tmp_path / "a", attack={"kind": "fm"})
    b = _run(tmp_path / "b", attack={"kind": "fm"})
    metrics = ["acc", "asr"]
    pd.testing.assert_frame_equal(a.history[metrics], b.history[metrics])
    c = _run(tmp_path / "a", attack={"kind": "fm"})
    assert c.cached and c.run_dir == a.run_dir
    d = _run(tmp_path / "a", attack={"kind": "fm"}, seed=1)
    assert d.run_dir != a.run_dir and not d.cached


def test_force_rerun_replaces_the_folder_only_when_finished(tmp_path):
    a = _run(tmp_path, attack={"kind": "none"})
    (a.run_dir / "marker").write_text("old")
    b = pr.run_experiment(pr.load_config("smoke"), results_dir=tmp_path, progress=False, force=True)
    assert b.run_dir == a.run_dir and not (b.run_dir / "marker").exists()
    assert not list(tmp_path.glob(".tmp_*")) and not list(tmp_path.glob("*.old"))


@pytest.mark.parametrize("stages", [("init",), ("kd",), ("init", "kd")])
def test_fm_stage_variants_use_the_poisoned_set_where_asked(stages):
    cfg = pr.load_config("smoke", attack={"kind": "fm", "fm_stages": stages})
    prep = pr.prepare(cfg, progress=False)
    inp = prep.inputs
    assert (inp.synthetic_init.digest() != prep.synthetic_clean.digest()) == ("init" in stages)
    assert (inp.synthetic_kd.digest() != prep.synthetic_clean.digest()) == ("kd" in stages)
    assert len(prep.fm_poisoned) == int(0.2 * 10) * 9  # ρ of each of the 9 non-target classes


def test_ddpm_source_runs_and_rejects_a_checkpoint_of_another_public_split(tmp_path, tiny_fm_dir):
    res = _run(tmp_path, attack={"kind": "fm"}, fm={"source": "ddpm", "checkpoint": str(tiny_fm_dir)})
    assert len(res.history) == 3
    from paper_repro.store import cache_dir
    assert list((cache_dir() / "synthetic").glob("ddpm_*.npz")), "synthetic set is cached by hash"
    with pytest.raises(FMCheckpointError, match="different public split"):
        pr.prepare(pr.load_config("smoke", data={"public_size": 150},
                                  fm={"source": "ddpm", "checkpoint": str(tiny_fm_dir)}))
    with pytest.raises(FMCheckpointError, match="No FM checkpoint"):
        pr.prepare(pr.load_config("smoke", fm={"source": "ddpm", "checkpoint": str(tmp_path / "missing")}))


def test_load_results_collects_runs(tmp_path):
    _run(tmp_path, attack={"kind": "none"})
    _run(tmp_path, attack={"kind": "fm"})
    df = pr.load_results(tmp_path)
    assert set(df["attack"]) == {"none", "fm"} and {"partition", "poison_ratio", "run"} <= set(df.columns)


def test_grid_writes_a_table_and_collect_rebuilds_it_from_run_folders(tmp_path):
    from paper_repro.studies import grid

    df = grid.run_grid("smoke", ["none", "median"], attacks=("none", "fm"), partitions=("iid",),
                       results_dir=tmp_path, progress=False)
    assert len(df) == 4 and (tmp_path / "grid_smoke.csv").exists()
    again = grid.collect(tmp_path, "smoke").set_index(["defense", "attack"]).sort_index()
    pd.testing.assert_series_equal(again["asr"], df.set_index(["defense", "attack"]).sort_index()["asr"])
    table = grid.pivot(df, "iid")
    assert list(table.index) == ["none", "median"] and ("asr", "fm") in table.columns


def test_run_key_covers_the_defense_defaults(monkeypatch):
    # Prepare: the same config, before and after a default of the defense changes
    cfg = pr.load_config("smoke", defense={"name": "act_bound"})
    before = pr.prepare(cfg, progress=False).hashes
    monkeypatch.setitem(pr.defenses.REGISTRY, "act_bound",
                        type("ActBound2", (pr.defenses.REGISTRY["act_bound"],),
                             {"__init__": lambda self, epochs=7, **kw: super(type(self), self).__init__(epochs=epochs,
                                                                                                       **kw)}))
    # Execute
    after = pr.prepare(cfg, progress=False).hashes
    # Assert: the resolved parameters differ, so the run key does
    assert before["defense"]["epochs"] != after["defense"]["epochs"]
    assert run_key(cfg, before) != run_key(cfg, after)


def test_resolved_params_names_unknown_parameters():
    assert pr.defenses.resolved_params("krum", {"num_malicious": 3})["num_malicious"] == 3
    with pytest.raises(ValueError, match="accepted"):
        pr.defenses.resolved_params("krum", {"num_maliciuos": 3})


@pytest.mark.parametrize("name,params", [("act_bound", {}), ("pruning", {}), ("mm_bm", {"epochs": 5})])
def test_a_post_fusion_defense_replays_the_no_defense_training_with_the_same_results(tmp_path, name, params):
    kw = {"attack": {"kind": "fm"}, "defense": {"name": name, "params": params}}
    full = pr.run_experiment(pr.load_config("smoke", **kw), results_dir=tmp_path / "full", progress=False,
                             options=pr.RunOptions.for_profile("smoke", share_training=False))
    shared = _run(tmp_path / "shared", **kw)
    assert "shared_training" not in full.history and shared.history["shared_training"].iloc[1:].all()
    cols = ["round", "acc", "asr"]
    pd.testing.assert_frame_equal(shared.history[cols], full.history[cols])
    assert full.run_dir.name == shared.run_dir.name  # an execution detail: same run key
    (base,) = [p for p in (tmp_path / "shared").iterdir() if p.name.startswith("smoke_fm_none_")]
    states = Trajectory.load(base / "trajectory.pt").states
    assert states.shape[0] == 3  # after init, after rounds 1 and 2
    assert (states[1] != states[2]).any()


def test_a_defense_that_changes_training_trains_itself(tmp_path):
    res = _run(tmp_path, attack={"kind": "fm"}, defense={"name": "act_bound", "params": {"deploy": "clients"}})
    assert "shared_training" not in res.history
    assert not any(p.name.startswith("smoke_fm_none_") for p in tmp_path.iterdir())
    cfg = pr.load_config("smoke", defense={"name": "krum"})
    prep = pr.prepare(cfg, progress=False)
    traj = Trajectory(torch.zeros(3, 1), [np.arange(5)] * 2, [{}] * 2)
    with pytest.raises(ValueError, match="cannot replay"):
        replay_federated(cfg, prep.inputs, pr.defenses.get("krum"), traj, progress=False)


def test_runs_that_share_seed_and_synthetic_set_start_from_one_cached_initial_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    a = _run(tmp_path / "a", attack={"kind": "classic"}, defense={"name": "krum"})
    b = _run(tmp_path / "b", attack={"kind": "none"}, defense={"name": "median"}, data={"partition": "dirichlet"})
    c = pr.run_experiment(pr.load_config("smoke", seed=1), results_dir=tmp_path / "c", progress=False)
    assert not a.history["init_cached"].iloc[0] and not c.history["init_cached"].iloc[0]
    assert b.history["init_cached"].iloc[0]
    assert a.history["acc"].iloc[0] == b.history["acc"].iloc[0]


def test_run_many_side_by_side_matches_one_at_a_time(tmp_path):
    cfgs = [pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": n}) for n in ("act_bound", "krum")]
    cfgs.append(pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": "pruning"}))
    cfgs.append(cfgs[0])  # a repeated config runs once
    one = pr.run_many(cfgs, tmp_path / "one", jobs=1, progress=False)
    two = pr.run_many(cfgs, tmp_path / "two", jobs=2, progress=False)
    assert [r.run_dir.name for r in one] == [r.run_dir.name for r in two]
    assert one[0].run_dir == one[3].run_dir
    # the replayed runs' no-defense base ran first, in both
    assert len(list((tmp_path / "two").glob("smoke_fm_none_*/trajectory.pt"))) == 1
    for a, b in zip(one, two):
        np.testing.assert_allclose(a.history[["acc", "asr"]], b.history[["acc", "asr"]], atol=0.02)
    with pytest.raises(ValueError, match="jobs"):
        pr.run_many(cfgs, tmp_path, jobs=0)
