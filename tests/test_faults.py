"""Faults a run folder or a cache can meet: a writer killed at each step of publishing, each kind of file truncated or
replaced, two processes running the same config at once, a read-only results folder. After each, nothing is served
wrong and no finished run is lost. ``docs/architecture.md`` ("Trusting what is on disk") tabulates them."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import paper_repro as pr
from paper_repro import results
from paper_repro.results import PUBLISH_STEPS, write_run

FM = {"attack": {"kind": "fm"}}


def _cfg(**kw):
    return pr.load_config("smoke", **{**FM, **kw})


def _run(where, **kw):
    return pr.run_experiment(_cfg(**kw), results_dir=where, progress=False)


def _same(a, b):
    pd.testing.assert_frame_equal(a.history[["round", "acc", "asr"]], b.history[["round", "acc", "asr"]])


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A finished smoke run (seed 0) and its seed-1 sibling, in a folder of their own."""
    where = tmp_path_factory.mktemp("ref")
    return _run(where), _run(where, seed=1)


def _publish(run_dir: Path, src: Path, kill_at: str | None) -> None:
    """Publish the run in ``src`` as ``run_dir`` with :func:`write_run`, killed (SIGKILL) right after ``kill_at``."""
    if kill_at:
        results._step = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == kill_at else None
    meta = json.loads((src / "config.json").read_text())
    with np.load(src / "indices.npz") as z:
        indices = dict(z)
    write_run(
        run_dir,
        meta,
        pd.read_csv(src / "metrics.csv"),
        indices,
        json.loads((src / "flagged.json").read_text()),
        extra={"trajectory.pt": lambda p: p.write_bytes(b"stand-in trajectory")},
    )


STEPS = [
    (s, force)
    for force in (False, True)
    for s in (*PUBLISH_STEPS[:3], "trajectory.pt", *PUBLISH_STEPS[3:])
    if force or s not in ("superseded", "swapped")
]


@pytest.mark.parametrize("step, force", STEPS, ids=[f"{s}{'-force' if f else ''}" for s, f in STEPS])
def test_a_writer_killed_after_any_publishing_step_loses_nothing_and_serves_nothing_wrong(tmp_path, ref, step, force):
    a = ref[0]
    run_dir = tmp_path / a.run_dir.name
    if force:  # a finished run is being replaced by a forced rerun
        shutil.copytree(a.run_dir, run_dir)
    child = multiprocessing.get_context("fork").Process(target=_publish, args=(run_dir, a.run_dir, step))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    published = force or step == "swapped"
    runs = pr.load_results(tmp_path)  # also puts back a run superseded by a writer that died mid-swap
    assert len(runs) == (len(a.history) if published else 0)
    b = pr.run_experiment(_cfg(), results_dir=tmp_path, progress=False)
    _same(a, b)
    assert b.cached == published  # a finished run is served, never lost and recomputed
    assert sorted(p.name for p in tmp_path.iterdir()) == [a.run_dir.name]  # no leftovers


RUN_FILES = ["config.json", "metrics.csv", "flagged.json", "indices.npz", "complete.json"]


@pytest.mark.parametrize("how", ["truncated", "replaced"])
@pytest.mark.parametrize("name", [*RUN_FILES, "the whole folder"])
def test_a_run_file_truncated_or_replaced_is_recomputed_not_served(tmp_path, ref, name, how):
    a, other = ref
    run_dir = tmp_path / a.run_dir.name
    if name == "the whole folder":  # seed 1's folder under seed 0's name
        shutil.copytree(other.run_dir if how == "replaced" else a.run_dir, run_dir)
        if how == "truncated":
            for f in run_dir.iterdir():
                f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    else:
        shutil.copytree(a.run_dir, run_dir)
        f = run_dir / name
        if how == "truncated":
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        elif f.read_bytes() != (other.run_dir / name).read_bytes():
            f.write_bytes((other.run_dir / name).read_bytes())
        else:  # both seeds flagged nobody: a file that says otherwise
            f.write_text(json.dumps([[0]] * len(a.history)))
    assert pr.load_results(tmp_path).empty
    with pytest.warns(UserWarning, match="not a complete run"):
        b = pr.run_experiment(_cfg(), results_dir=tmp_path, progress=False)
    assert not b.cached
    _same(a, b)


@pytest.mark.parametrize("how", ["truncated", "replaced"])
def test_a_cached_initial_model_truncated_or_replaced_is_retrained(tmp_path, monkeypatch, how):
    from paper_repro.store import cache_dir

    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    a = _run(tmp_path / "a")
    _run(tmp_path / "a", seed=1)
    f0, f1 = sorted((cache_dir() / "init").glob("*.pt"), key=lambda f: f.stat().st_mtime)  # seed 0, seed 1
    f0.write_bytes(f0.read_bytes()[:100] if how == "truncated" else f1.read_bytes())
    with pytest.warns(UserWarning, match=f"cached initial model {f0}"):
        b = _run(tmp_path / "b")
    assert not b.history["init_cached"].iloc[0]
    _same(a, b)


@pytest.mark.parametrize("how", ["truncated", "replaced"])
def test_a_cached_synthetic_set_truncated_or_replaced_is_redrawn(tmp_path, monkeypatch, tiny_fm_dir, how):
    from paper_repro.store import cache_dir

    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    fm = {"source": "ddpm", "checkpoint": str(tiny_fm_dir)}
    a = _run(tmp_path / "a", fm=fm)
    _run(tmp_path / "a", fm={**fm, "sample_seed": 1})
    f0, f1 = sorted((cache_dir() / "synthetic").glob("*.npz"), key=lambda f: f.stat().st_mtime)
    f0.write_bytes(f0.read_bytes()[:100] if how == "truncated" else f1.read_bytes())
    with pytest.warns(UserWarning, match=f"cached synthetic set {f0}"):
        b = _run(tmp_path / "b", fm=fm)
    _same(a, b)


@pytest.mark.parametrize("how", ["truncated", "replaced"])
def test_a_saved_model_truncated_or_replaced_is_computed_again_not_served(tmp_path, how):
    from paper_repro.results import MODEL

    def kept(seed):
        return pr.run_experiment(
            pr.load_config("smoke", attack={"kind": "fm"}, seed=seed), tmp_path, progress=False, keep_model=True
        )

    a, other = kept(0), kept(1)
    m = a.run_dir / MODEL
    m.write_bytes(m.read_bytes()[:100] if how == "truncated" else (other.run_dir / MODEL).read_bytes())
    b = kept(0)
    assert not b.cached
    _same(a, b)
    mine, theirs = pr.runner.final_model(b), pr.runner.final_model(other)
    assert any(not torch.equal(v, theirs[k]) for k, v in mine.items())  # its own weights, not the copied seed-1 ones


def test_a_truncated_fm_checkpoint_is_named_with_its_fix(tmp_path, tiny_fm_dir):
    from paper_repro.fm import FMCheckpointError

    broken = shutil.copytree(tiny_fm_dir, tmp_path / "fm")
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(FMCheckpointError, match=rf"{broken}.*unreadable.*python -m paper_repro.fm train"):
        _run(tmp_path / "res", fm={"source": "ddpm", "checkpoint": str(broken)})


def _run_in_child(where: str) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = _run(Path(where))
    return r.history[["round", "acc", "asr"]].values.tolist()


def test_two_processes_running_the_same_config_at_once_agree_and_leave_one_folder(tmp_path, monkeypatch, ref):
    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))  # both also race to write the same caches
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        outs = list(pool.map(_run_in_child, [str(tmp_path / "res")] * 2))
    assert outs[0] == outs[1] == ref[0].history[["round", "acc", "asr"]].values.tolist()
    assert [p.name for p in (tmp_path / "res").iterdir()] == [ref[0].run_dir.name]
    assert len(pr.load_results(tmp_path / "res")) == len(ref[0].history)


def _read_only_child(res: str, as_nobody: bool) -> None:
    """In a forked child (modules already imported): serve a finished run, then try a new one; exit code 0 only if
    the run was served and the new one refused before any work."""
    if as_nobody:
        os.setgid(65534)
        os.setuid(65534)
    try:
        assert pr.run_experiment(_cfg(), results_dir=res, progress=False).cached
        try:
            _run(res, seed=5)
        except PermissionError as e:
            os._exit(0 if "not writable" in str(e) else 3)
        os._exit(4)
    except BaseException:  # noqa: BLE001
        os._exit(5)


def test_a_read_only_results_folder_serves_its_runs_and_refuses_new_ones_before_any_work(ref, tmp_path):
    """As root, permissions do not bind: the child then runs as the unprivileged user ``nobody``."""
    base = Path(tempfile.mkdtemp())
    try:
        res = base / "res"
        shutil.copytree(ref[0].run_dir, res / ref[0].run_dir.name)
        for p in (base, *base.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        res.chmod(0o555)
        child = multiprocessing.get_context("fork").Process(target=_read_only_child, args=(str(res), os.geteuid() == 0))
        child.start()
        child.join(600)
        assert child.exitcode == 0, {
            3: "refused without saying why",
            4: "computed into a read-only folder",
            5: "failed",
        }.get(child.exitcode, child.exitcode)
        assert sorted(p.name for p in res.iterdir()) == [ref[0].run_dir.name]
    finally:
        for p in (base, *base.rglob("*")):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base)


def test_run_folders_get_the_permissions_the_umask_gives(tmp_path):
    # mkdtemp makes folders owner-only (0700): a second user of a shared results folder would see no run
    old = os.umask(0o022)
    try:
        res = _run(tmp_path / "shared")
    finally:
        os.umask(old)
    assert res.run_dir.stat().st_mode & 0o777 == 0o755
