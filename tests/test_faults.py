"""Faults a run folder or a cache can meet: a writer killed at each step of publishing, each kind of file truncated or
replaced, two processes running the same config at once, a read-only results folder. After each, nothing is served
wrong and no finished run is lost. ``docs/architecture.md`` ("Trusting what is on disk") tabulates them."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
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
    listing = sorted(p.name for p in tmp_path.iterdir())
    runs = pr.load_results(tmp_path)  # reads a run superseded by a writer that died mid-swap where it lies
    assert len(runs) == (len(a.history) if published else 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # a reader moves and deletes nothing
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
    with pytest.warns(UserWarning, match="left out"):
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


@contextlib.contextmanager
def _shared_results(run_dir: Path):
    """A results folder (outside pytest's owner-only tmp) holding a copy of ``run_dir``, readable by everyone; the
    permissions are restored and the folder removed afterwards."""
    base = Path(tempfile.mkdtemp())
    try:
        res = base / "res"
        shutil.copytree(run_dir, res / run_dir.name)
        for p in (base, *base.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield res
    finally:
        for p in (base, *base.rglob("*")):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base)


def test_a_read_only_results_folder_serves_its_runs_and_refuses_new_ones_before_any_work(ref, tmp_path):
    """As root, permissions do not bind: the child then runs as the unprivileged user ``nobody``."""
    with _shared_results(ref[0].run_dir) as res:
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


def test_run_folders_get_the_permissions_the_umask_gives(tmp_path):
    # mkdtemp makes folders owner-only (0700): a second user of a shared results folder would see no run
    old = os.umask(0o022)
    try:
        res = _run(tmp_path / "shared")
    finally:
        os.umask(old)
    assert res.run_dir.stat().st_mode & 0o777 == 0o755


def _unreadable_child(res: str, as_nobody: bool) -> None:
    if as_nobody:
        os.setgid(65534)
        os.setuid(65534)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = pr.load_results(res)
    said = " ".join(str(w.message) for w in caught)
    os._exit(0 if df.empty and "cannot be read" in said else 3)


def test_a_run_folder_that_cannot_be_read_is_reported_not_silently_skipped(ref):
    """A shared results folder with another user's owner-only run: the reader says which run it cannot read."""
    with _shared_results(ref[0].run_dir) as res:
        (res / ref[0].run_dir.name).chmod(0o700 if os.geteuid() == 0 else 0o000)
        child = multiprocessing.get_context("fork").Process(
            target=_unreadable_child, args=(str(res), os.geteuid() == 0)
        )
        child.start()
        child.join(120)
        assert child.exitcode == 0, "an unreadable run folder was skipped without a word"


def _drop(d: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d[p]
    del d[leaf]


FM_META_DAMAGE = [
    ("fm_config.json", lambda m: _drop(m, "info"), "info.train_data_digest is missing"),
    ("fm_config.json", lambda m: _drop(m, "info.train_data_digest"), "info.train_data_digest is missing"),
    ("fm_config.json", lambda m: m.update(classes=m["classes"][:1]), "draws 1 classes"),
    ("fm_config.json", lambda m: m.update(classes=list(reversed(m["classes"]))), "classes"),
    ("fm_config.json", lambda m: m.update(classes="abc"), "classes='abc'"),
    ("fm_config.json", lambda m: _drop(m, "classes"), "classes=None"),
    ("fm_config.json", lambda m: _drop(m, "train_config"), "train_config"),
    ("fm_config.json", lambda m: m["train_config"].update(bogus=1), "train_config"),
    ("fm_config.json", lambda m: _drop(m, "train_config.block_out_channels"), "train_config"),
    ("fm_config.json", lambda m: m.update(kind="other"), "kind='other'"),
    ("fm_config.json", lambda m: m.update(info={"train_data_digest": "0" * 16}), "different public split"),
    ("unet/config.json", lambda m: m.update(sample_size=32), "draws 1×32×32"),
    ("unet/config.json", lambda m: m.update(in_channels=3), "draws 3×"),
    ("unet/config.json", lambda m: _drop(m, "num_class_embeds"), "num_class_embeds=None"),
    ("unet/config.json", lambda m: m.update(num_class_embeds=4), "class embeddings 4"),
    ("fm_config.json", None, "cannot be read"),  # not JSON
    ("fm_config.json", [], "not the expected mapping"),  # JSON, not a mapping
    ("unet/config.json", "missing", "is missing"),
]


@pytest.mark.parametrize("name, damage, said", FM_META_DAMAGE, ids=[f"{n}:{s}" for n, _, s in FM_META_DAMAGE])
def test_damaged_fm_metadata_is_refused_with_its_path_before_any_weight_is_read(
    tmp_path, tiny_fm_dir, name, damage, said
):
    """Every kind of damage to an FM checkpoint's metadata is refused, naming the file (no KeyError, IndexError or
    torch shape error), and the intact copy still runs."""
    from paper_repro.fm import FMCheckpointError

    fm = shutil.copytree(tiny_fm_dir, tmp_path / "fm")
    f = fm / name
    if damage is None:
        f.write_text("{not json")
    elif damage == "missing":
        f.unlink()
    elif isinstance(damage, list):
        f.write_text(json.dumps(damage))
    else:
        meta = json.loads(f.read_text())
        damage(meta)
        f.write_text(json.dumps(meta))
    with pytest.raises(FMCheckpointError, match=rf"(?s){fm}.*{said}" if "draws" not in said else said):
        _run(tmp_path / "res", fm={"source": "ddpm", "checkpoint": str(fm)})


def _grid_copy(tmp_path) -> Path:
    """The committed quick grid table copied into ``tmp_path`` through the package's writer (checksum recorded)."""
    from paper_repro.tables import TABLES_DIR, write_csv

    write_csv(pd.read_csv(TABLES_DIR / "grid_quick.csv"), tmp_path / "grid_quick.csv", "%.5g")
    return tmp_path / "grid_quick.csv"


TABLE_DAMAGE = [
    ("last 100 rows cut", lambda t: t.write_text("".join(t.read_text().splitlines(True)[:-100])), "rows now"),
    ("a NaN ASR", lambda t: _edit_csv(t, lambda df: df.assign(asr=df["asr"].where(df.index != 3))), "asr is empty"),
    ("an ASR of 7.5", lambda t: _edit_csv(t, lambda df: df.assign(asr=df["asr"].where(df.index != 3, 7.5))), "7.5"),
    ("duplicated rows", lambda t: _edit_csv(t, lambda df: pd.concat([df, df.iloc[:5]])), "repeat"),
    ("a missing column", lambda t: _edit_csv(t, lambda df: df.drop(columns="seed")), "missing"),
    ("an empty file", lambda t: t.write_text(""), "not a readable table"),
    ("only the header", lambda t: t.write_text(t.read_text().splitlines(True)[0]), "no rows"),
    ("binary garbage", lambda t: t.write_bytes(bytes(range(256)) * 4), "not a readable table"),
]


def _edit_csv(path: Path, change) -> None:
    change(pd.read_csv(path)).to_csv(path, index=False)


@pytest.mark.unit
@pytest.mark.parametrize("what, damage, said", TABLE_DAMAGE, ids=[w for w, _, _ in TABLE_DAMAGE])
def test_a_damaged_table_is_refused_when_read_naming_it_and_the_command_that_rewrites_it(tmp_path, what, damage, said):
    """Edited by hand or cut short, a table never reaches a figure: reading it names the file, what is wrong and
    how to rewrite it (the checksum catches what the content checks cannot)."""
    from paper_repro.tables import TableError, read_table

    t = _grid_copy(tmp_path)
    read_table("grid", "quick", tmp_path)  # intact: read
    damage(t)
    with pytest.raises(TableError, match=rf"(?s)grid_quick\.csv.*{re.escape(said)}.*python -m paper_repro results"):
        read_table("grid", "quick", tmp_path)


@pytest.mark.unit
def test_figure_titles_say_when_cells_have_fewer_seeds_or_diverged_runs(tmp_path):
    from paper_repro.tables import seeds_text

    grid = pd.read_csv(_grid_copy(tmp_path))
    full = grid[grid["partition"] == "iid"]
    assert seeds_text(full) == "mean ± std over seeds 0, 1, 2"
    cut = full.drop(full[(full["defense"] == "act_bound") & (full["seed"] == 2)].index)
    assert "with n = 2–3" in seeds_text(cut)
    diverged = full.assign(status=np.where(full.index == full.index[0], "diverged", "ok"))
    assert "1 diverged runs left out" in seeds_text(diverged)


FILE_SIZE_LIMITED = """
import os, resource, signal, sys
from pathlib import Path
import torch
from paper_repro.store import WriteError, save_atomic
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
try:
    save_atomic(lambda tmp: torch.save(torch.zeros(100_000), tmp), path)
except WriteError as e:
    print(e)
    sys.exit(0 if path in str(e) and "file-size limit" in str(e) and not list(Path(path).parent.iterdir()) else 3)
sys.exit(4)
"""


def test_a_write_cut_short_by_a_file_size_limit_names_the_file_and_the_limit(tmp_path):
    """A real failed write through torch (400 kB under a 50 kB file-size limit): torch's own error names neither."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED, str(tmp_path / "w" / "weights.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"exit {out.returncode} (4: nothing raised): {out.stdout} {out.stderr[-2000:]}"


def test_a_full_disk_names_the_run_folder_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    from paper_repro.store import WriteError

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.np, "savez_compressed", full)
    with pytest.raises(WriteError, match="no space left on the device") as e:
        _run(tmp_path / "res")
    assert str(tmp_path / "res") in str(e.value) and "MiB free" in str(e.value)
    assert not list((tmp_path / "res").iterdir())  # no half-written run, no temporary folder
    assert pr.load_results(tmp_path / "res").empty


def test_torchs_opaque_write_error_on_a_nearly_full_disk_says_no_space(tmp_path, monkeypatch):
    from collections import namedtuple

    from paper_repro import store

    def torch_fails(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(10, 9, 2**20))
    with pytest.raises(store.WriteError, match=r"cannot write .*model\.pt: no space left on the device; 1 MiB free"):
        store.save_atomic(torch_fails, tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match="not about files"):  # other errors pass through untouched
        store.save_atomic(lambda tmp: (_ for _ in ()).throw(RuntimeError("not about files")), tmp_path / "m.pt")


_ORPHAN = """
import concurrent.futures as cf, multiprocessing as mp, os, signal, sys, time
from paper_repro.execution import worker_init
if __name__ == "__main__":
    init, args = (worker_init, (1, 0.1)) if sys.argv[1] == "watched" else (None, ())
    pool = cf.ProcessPoolExecutor(1, mp.get_context("spawn"), init, args)
    with open(sys.argv[2], "w") as f:
        f.write(str(pool.submit(os.getpid).result()))
    pool.submit(time.sleep, 120)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)  # the parent dies without shutting its pool down
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["watched", "plain"])
def test_a_run_worker_ends_when_the_process_that_started_it_is_killed(tmp_path, mode):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    pid_file = tmp_path / "worker.pid"
    # no pipes: an orphan holding the test's stdout would keep subprocess.run waiting for it
    subprocess.run(
        [sys.executable, str(script), mode, str(pid_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    pid = int(pid_file.read_text())
    try:
        for _ in range(100):  # wait for the worker to notice (it polls every 0.1 s)
            if not _alive(pid):
                break
            time.sleep(0.1)
        if mode == "watched":
            assert not _alive(pid), "the orphaned worker kept running"
        else:  # without the watchdog the worker outlives its parent: what the watchdog is for
            assert _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.unit
def test_a_file_lock_excludes_another_process_until_it_is_released(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("fcntl")
    from paper_repro.store import file_lock

    lock = tmp_path / "draw.lock"
    probe = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'a+')\n"
        "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
    )

    def other_can_take_it() -> bool:
        return subprocess.run([sys.executable, "-c", probe, str(lock)], timeout=60).returncode == 0

    with file_lock(lock):
        assert not other_can_take_it()  # held here: a second worker would wait
    assert other_can_take_it()  # released
