"""Smoke tier: the real code path end to end on tiny data, every attack kind."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import paper_repro as pr
from paper_repro.fm import FMCheckpointError
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
        pr.prepare(
            pr.load_config("smoke", data={"public_size": 150}, fm={"source": "ddpm", "checkpoint": str(tiny_fm_dir)})
        )
    with pytest.raises(FMCheckpointError, match="No FM checkpoint"):
        pr.prepare(pr.load_config("smoke", fm={"source": "ddpm", "checkpoint": str(tmp_path / "missing")}))


def test_load_results_collects_runs(tmp_path):
    _run(tmp_path, attack={"kind": "none"})
    _run(tmp_path, attack={"kind": "fm"})
    df = pr.load_results(tmp_path)
    assert set(df["attack"]) == {"none", "fm"} and {"partition", "poison_ratio", "run"} <= set(df.columns)


def test_grid_writes_a_table_and_collect_rebuilds_it_from_run_folders(tmp_path):
    from paper_repro.studies import grid

    df = grid.run_grid(
        "smoke", ["none", "median"], attacks=("none", "fm"), partitions=("iid",), results_dir=tmp_path, progress=False
    )
    assert len(df) == 4 and (tmp_path / "grid_smoke.csv").exists()
    again = grid.collect(tmp_path, "smoke").set_index(["defense", "attack"]).sort_index()
    pd.testing.assert_series_equal(again["asr"], df.set_index(["defense", "attack"]).sort_index()["asr"])
    table = grid.pivot(df, "iid")
    assert list(table.index) == ["none", "median"] and ("asr", "fm") in table.columns


def test_run_key_covers_the_defense_defaults(monkeypatch):
    from paper_repro.params import variant

    # Prepare: the same config, before and after a default of the defense changes
    cfg = pr.load_config("smoke", defense={"name": "act_bound"})
    before = pr.prepare(cfg, progress=False).hashes
    monkeypatch.setitem(
        pr.defenses.REGISTRY,
        "act_bound",
        type(
            "ActBound2",
            (pr.defenses.REGISTRY["act_bound"],),
            {"Params": variant(pr.defenses.ActBound.Params, epochs=7)},
        ),
    )
    # Execute
    after = pr.prepare(cfg, progress=False).hashes
    # Assert: the resolved parameters differ, so the run key does
    assert before["defense"]["epochs"] != after["defense"]["epochs"]
    assert run_key(cfg, before) != run_key(cfg, after)


def test_resolved_params_names_unknown_parameters():
    assert pr.defenses.resolved_params("krum", {"num_malicious": 3})["num_malicious"] == 3
    with pytest.raises(ValueError, match="accepted"):
        pr.defenses.resolved_params("krum", {"num_maliciuos": 3})


@pytest.mark.parametrize(
    "name,params", [("act_bound", {}), ("pruning", {}), ("pruning", {"finetune_epochs": 1}), ("mm_bm", {"epochs": 5})]
)
def test_a_post_fusion_defense_served_from_the_no_defense_training_has_the_same_results(tmp_path, name, params):
    kw = {"attack": {"kind": "fm"}, "defense": {"name": name, "params": params}}
    full = pr.run_experiment(
        pr.load_config("smoke", **kw),
        results_dir=tmp_path / "full",
        progress=False,
        options=pr.RunOptions.for_profile("smoke", share_training=False),
    )
    shared = _run(tmp_path / "shared", **kw)
    assert "shared_training" not in full.history and shared.history["shared_training"].iloc[1:].all()
    cols = ["round", "acc", "asr"]
    pd.testing.assert_frame_equal(shared.history[cols], full.history[cols])
    assert full.run_dir.name == shared.run_dir.name  # an execution detail: same run key
    (base,) = [p for p in (tmp_path / "shared").iterdir() if p.name.startswith("smoke_fm_none_")]  # written too
    assert json.loads((shared.run_dir / "config.json").read_text())["inputs"]["trained_with"] == base.name


def test_post_fusion_defenses_side_by_side_match_each_alone_and_train_once(tmp_path, monkeypatch):
    calls, train = [], pr.fl.local_training
    monkeypatch.setattr(pr.fl, "local_training", lambda *a, **k: calls.append(1) or train(*a, **k))
    names = ("act_bound", "mm_bm", "pruning", "none")
    together = pr.run_many(
        [pr.load_config("smoke", attack={"kind": "fm"}, defense=n) for n in names],
        tmp_path / "together",
        progress=False,
    )
    assert len(calls) == 2  # one training (2 rounds) for four defenses
    for n, res in zip(names, together):
        alone = pr.run_experiment(
            pr.load_config("smoke", attack={"kind": "fm"}, defense=n),
            tmp_path / n,
            progress=False,
            options=pr.RunOptions.for_profile("smoke", share_training=False),
        )
        pd.testing.assert_frame_equal(res.history[["round", "acc", "asr"]], alone.history[["round", "acc", "asr"]])
        assert res.run_dir.name == alone.run_dir.name


def test_a_defense_that_changes_training_trains_itself(tmp_path):
    res = _run(tmp_path, attack={"kind": "fm"}, defense={"name": "act_bound", "params": {"deploy": "clients"}})
    assert "shared_training" not in res.history
    assert not any(p.name.startswith("smoke_fm_none_") for p in tmp_path.iterdir())
    cfg = pr.load_config("smoke", defense={"name": "krum"})
    prep = pr.prepare(cfg, progress=False)
    with pytest.raises(ValueError, match="act only after fusion"):
        pr.fl.run_federated(
            cfg, prep.inputs, pr.defenses.get("none"), progress=False, alongside={"k": pr.defenses.get("krum")}
        )


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
    # the post-fusion runs were served from one no-defense training, written once, in both
    assert len(list((tmp_path / "two").glob("smoke_fm_none_*"))) == 1
    for a, b in zip(one, two):
        np.testing.assert_allclose(a.history[["acc", "asr"]], b.history[["acc", "asr"]], atol=0.02)
    with pytest.raises(ValueError, match="jobs"):
        pr.run_many(cfgs, tmp_path, jobs=0)


def test_a_diverged_run_reports_no_acc_asr_and_a_robust_defense_keeps_it_finite(tmp_path):
    # an attacker whose boosted update (3e38, near float32's largest) overflows to inf: FedAvg takes it in and the
    # weights stop being numbers
    res = _run(tmp_path, attack={"kind": "classic", "boost": 3e38})
    last = res.history.iloc[-1]
    assert res.status == "diverged" and last["status"] == "diverged"
    assert np.isnan(last["acc"]) and np.isnan(last["asr"])
    assert (res.history["status"].iloc[:-1] == "ok").all()
    # the coordinate-wise median outvotes the huge update and the run stays finite, flagging no benign client (a
    # non-finite update is left out and its sender flagged: tests/test_aggregators.py)
    res = _run(tmp_path, attack={"kind": "classic", "boost": 3e38}, defense={"name": "median"})
    assert res.status == "ok" and res.history["acc"].notna().all()
    malicious = set(np.load(res.run_dir / "indices.npz")["malicious"].tolist())
    flagged = {k for f in json.loads((res.run_dir / "flagged.json").read_text()) for k in f}
    assert flagged <= malicious


def test_a_run_folder_says_what_made_it(tmp_path):
    res = _run(tmp_path, attack={"kind": "fm"}, defense={"name": "act_bound"})
    p = res.provenance
    assert p["versions"]["torch"] == torch.__version__ and "numpy" in p["versions"]
    assert p["git"]["commit"] and p["options"]["engine"] == "auto" and p["started"] <= p["finished"]
    base = p["inputs"]["trained_with"]
    assert base.startswith("smoke_fm_none_") and (tmp_path / base / "complete.json").is_file()
    assert pr.RunResult.load(tmp_path / base).provenance["inputs"]["initial_model"].startswith("tiny_")


def test_the_synthetic_cache_key_covers_every_sampler_setting(tiny_fm_dir):
    from paper_repro.fm.synthetic import synthetic_key

    cfgs = [
        pr.load_config("smoke", fm={"source": "ddpm", "checkpoint": str(tiny_fm_dir), **kw})
        for kw in ({}, {"batch_size": 7}, {"eta": 0.5}, {"precision": "bf16"}, {"sample_seed": 1})
    ]
    keys = [json.dumps(synthetic_key(c, tiny_fm_dir), sort_keys=True) for c in cfgs]
    assert len(set(keys)) == len(keys)


# ------------------------------------------------------------------------------------------------ faults
DEAD_PID = 999_999_999  # no such process


def test_leftovers_of_a_killed_writer_are_never_counted_and_are_cleaned_up(tmp_path):
    a = _run(tmp_path, attack={"kind": "fm"})
    import shutil

    # a writer killed before its rename, and one killed during a forced swap
    shutil.copytree(a.run_dir, tmp_path / f".tmp_{DEAD_PID}_abc")
    shutil.copytree(a.run_dir, tmp_path / f".old_{DEAD_PID}_{a.run_dir.name}")
    assert pr.load_results(tmp_path)["run"].nunique() == 1
    b = pr.run_experiment(
        pr.load_config("smoke", attack={"kind": "fm"}), results_dir=tmp_path, progress=False, force=True
    )
    assert b.run_dir == a.run_dir and sorted(p.name for p in tmp_path.iterdir()) == [a.run_dir.name]


@pytest.mark.parametrize(
    "damage", ["truncate_metrics", "drop_record", "edit_config", "empty_record", "unlisted_metrics", "extra_file"]
)
def test_a_damaged_run_folder_is_recomputed_not_served(tmp_path, damage):
    a = _run(tmp_path, attack={"kind": "fm"})
    record = json.loads((a.run_dir / "complete.json").read_text())
    if damage == "truncate_metrics":
        lines = (a.run_dir / "metrics.csv").read_text().splitlines()
        (a.run_dir / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")
    elif damage == "drop_record":
        (a.run_dir / "complete.json").unlink()
    elif damage in ("empty_record", "unlisted_metrics"):  # a record that vouches for nothing, or not for the metrics
        files = {} if damage == "empty_record" else {k: v for k, v in record["files"].items() if k != "metrics.csv"}
        (a.run_dir / "complete.json").write_text(json.dumps({"files": files}))
        (a.run_dir / "metrics.csv").write_text((a.run_dir / "metrics.csv").read_text().replace("0.", "0.9", 1))
    elif damage == "extra_file":  # a file the run never wrote, e.g. weights dropped in from elsewhere
        (a.run_dir / "model.pt").write_bytes(b"not this run's")
    else:
        (a.run_dir / "config.json").write_text((a.run_dir / "config.json").read_text().replace("fm", "none", 1))
    assert pr.load_results(tmp_path).empty
    with pytest.warns(UserWarning, match="not a complete run"):
        b = _run(tmp_path, attack={"kind": "fm"})
    assert not b.cached and len(b.history) == 3
    pd.testing.assert_frame_equal(b.history[["acc", "asr"]], a.history[["acc", "asr"]])


def test_a_saved_model_is_served_only_when_asked_for_and_intact(tmp_path):
    from paper_repro.results import MODEL

    cfg = pr.load_config("smoke", attack={"kind": "fm"})
    plain = pr.run_experiment(cfg, tmp_path, progress=False)
    assert not (plain.run_dir / MODEL).exists()
    kept = pr.run_experiment(cfg, tmp_path, progress=False, keep_model=True)  # recomputed: the model was missing
    assert not kept.cached and kept.run_dir == plain.run_dir
    state = pr.runner.final_model(kept)
    assert all(torch.isfinite(v).all() for v in state.values())
    assert pr.run_experiment(cfg, tmp_path, progress=False, keep_model=True).cached
    (kept.run_dir / MODEL).write_bytes(b"not a model")  # a replaced file fails its checksum: computed again
    again = pr.run_experiment(cfg, tmp_path, progress=False, keep_model=True)
    assert not again.cached
    pd.testing.assert_frame_equal(again.history[["acc", "asr"]], plain.history[["acc", "asr"]])


def test_corrupt_cache_files_are_named_and_recomputed(tmp_path, monkeypatch, tiny_fm_dir):
    from paper_repro.store import cache_dir

    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    kw = {"attack": {"kind": "fm"}, "fm": {"source": "ddpm", "checkpoint": str(tiny_fm_dir)}}
    a = _run(tmp_path / "a", **kw)
    for f in [*(cache_dir() / "synthetic").glob("*.npz"), *(cache_dir() / "init").glob("*.pt")]:
        f.write_bytes(f.read_bytes()[:100])  # truncated by a full disk or a killed copy
    with pytest.warns(UserWarning) as record:
        b = _run(tmp_path / "b", **kw)
    said = " ".join(str(w.message) for w in record)
    assert "cached synthetic set" in said and "cached initial model" in said
    pd.testing.assert_frame_equal(b.history[["acc", "asr"]], a.history[["acc", "asr"]])


def test_force_recomputes_every_cached_input_too(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    a = _run(tmp_path, attack={"kind": "classic"})
    b = _run(tmp_path / "other", attack={"kind": "classic"})  # another results folder: the initial model is cached
    assert not a.history["init_cached"].iloc[0] and b.history["init_cached"].iloc[0]
    c = pr.run_experiment(
        pr.load_config("smoke", attack={"kind": "classic"}), results_dir=tmp_path / "other", progress=False, force=True
    )
    assert not c.history["init_cached"].iloc[0]
    pd.testing.assert_frame_equal(c.history[["acc", "asr"]], a.history[["acc", "asr"]])
    assert a.run_dir.name == c.run_dir.name and "code" in json.loads((c.run_dir / "config.json").read_text())["hashes"]


def test_the_fast_mode_runs_bf16_everywhere_under_its_own_key(tmp_path):
    from paper_repro.initial import initial_model_key
    from paper_repro.inputs import prepare

    cfg = pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": "act_bound", "params": {"epochs": 1}})
    ref = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    fast = pr.run_experiment(cfg, results_dir=tmp_path, progress=False, options=pr.RunOptions(fast=True))
    saved = json.loads((fast.run_dir / "config.json").read_text())["config"]
    assert saved["fl"]["precision"] == "bf16" and fast.run_dir != ref.run_dir  # its own folder, never served as fp32
    assert fast.history[["acc", "asr"]].notna().all().all()
    # the step-0 model cache is keyed by the precision too; an fp32 run keeps its key
    inp = prepare(cfg, progress=False).inputs
    bf16 = pr.runner.in_fast_mode(cfg)
    assert initial_model_key(cfg, inp) != initial_model_key(bf16, inp)
    again = pr.run_experiment(cfg, results_dir=tmp_path, progress=False, options=pr.RunOptions(fast=False))
    assert again.run_dir == ref.run_dir


@pytest.mark.smoke
def test_cli_fast_writes_its_tables_apart(tmp_path, monkeypatch):
    import subprocess
    import sys

    env = {
        **__import__("os").environ,
        "PAPER_REPRO_RESULTS": str(tmp_path / "r"),
        "PAPER_REPRO_CACHE": str(tmp_path / "c"),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "paper_repro",
            "attacks",
            "--profile",
            "smoke",
            "--fast",
            "--seeds",
            "0",
            "--attacks",
            "FM patch",
            "--defenses",
            "none",
            "--tables-dir",
            str(tmp_path / "t"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    runs = list((tmp_path / "r").glob("*/config.json"))
    assert runs and all(json.loads(p.read_text())["config"]["fl"]["precision"] == "bf16" for p in runs)
    assert (tmp_path / "t" / "attack_breadth_smoke.csv").is_file()
    from paper_repro.cliargs import native_bf16

    if native_bf16() is False:  # the user is told that bf16 is emulated on this CPU
        assert "no native bf16" in out.stderr


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    from paper_repro.cliargs import native_bf16

    (tmp_path / "a").write_text("flags\t\t: fpu avx2 avx512f\n")
    (tmp_path / "b").write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert native_bf16(tmp_path / "a") is False and native_bf16(tmp_path / "b") is True
    assert native_bf16(tmp_path / "missing") is None
