"""Results that outlive the machine: the run ledger serves a record like a run folder and refuses damaged ones; a
recompute killed at random moments and resumed in new processes makes the same table as an uninterrupted one; a
table's staleness follows the code of its runs' closures; code digests come from import closures alone; committed
figures carry the digest of what drew them; the shipped synthetic set is the one the current code would draw."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import paper_repro as pr
from paper_repro import ledger as lg
from paper_repro.options import RunOptions

REPO = Path(pr.__file__).resolve().parent.parent
PKG = REPO / "paper_repro"
TIMING = ("defense_seconds", "round_seconds", "overhead")
"""Columns that measure the machine, not the run: equal only between one run and itself."""
SMOKE_CELLS = [
    ("none", "fm", "iid", 0),
    ("act_bound", "fm", "iid", 0),
    ("median", "classic", "iid", 0),
    ("none", "none", "dirichlet0.5", 1),
    ("mm_bm", "fm", "iid", 0),
    ("krum", "classic", "iid", 1),
    ("none", "classic", "iid", 2),
    ("flame", "none", "iid", 0),
]
MORE_CELLS = [
    (d, a, p, s)
    for s in (3, 4, 5)
    for p in ("iid", "dirichlet0.5")
    for a, d in (("fm", "none"), ("fm", "act_bound"), ("classic", "median"), ("classic", "krum"))
]
"""A longer table for the kill test: smoke runs take a fraction of a second each."""


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A fresh ledger and results folder for the test (the cache of synthetic sets and initial models is shared)."""
    monkeypatch.setenv("PAPER_REPRO_LEDGER", str(tmp_path / "ledger"))
    monkeypatch.setenv("PAPER_REPRO_RESULTS", str(tmp_path / "results"))
    return tmp_path


def _smoke_table(folder: Path, cells=SMOKE_CELLS) -> Path:
    """A committed-table stand-in: a smoke grid table holding only its label columns."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "grid_smoke.csv"
    pd.DataFrame(cells, columns=["defense", "attack", "partition", "seed"]).to_csv(path, index=False)
    return path


def _run(cfg, **kw):
    return pr.run_experiment(cfg, progress=False, options=RunOptions.for_profile(cfg.profile, **kw))


@pytest.mark.smoke
def test_a_ledger_record_is_served_like_its_run_folder_and_damaged_ones_are_refused(stores):
    cfg = pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": "act_bound"})
    first = _run(cfg, ledger=True)
    rec_path = stores / "ledger" / f"{first.run_dir.name}.json"
    assert rec_path.is_file() and list((stores / "ledger").glob("smoke_fm_none_iid_s0_*.json"))  # its training
    shutil.rmtree(stores / "results")  # a new machine: no run folder, only the committed ledger
    served = _run(cfg)
    assert served.cached and served.run_dir.name == first.run_dir.name
    pd.testing.assert_frame_equal(served.history, first.history)
    assert served.config == first.config and served.provenance["git"] == first.provenance["git"]

    rec = json.loads(rec_path.read_text())
    meta = json.loads(rec["text"]["config.json"])
    assert meta["machine"]["cpu"] and "fl.py" in meta["code_files"] and "precision.py" in meta["code_files"]
    assert not ({"indices.npz", "trajectory.pt"} & set(rec["text"]))  # checksums of them, never the files
    for damage, why in (
        (lambda r: r["text"].update({"metrics.csv": r["text"]["metrics.csv"].replace("0.", "1.", 1)}), "self-checksum"),
        (lambda r: r.update({"run": "smoke_fm_act_bound_iid_s0_000000000000"}), "records run"),
    ):
        shutil.rmtree(stores / "results")
        bad = json.loads(rec_path.read_text())
        damage(bad)
        rec_path.write_text(json.dumps(bad))
        with pytest.warns(UserWarning, match=why):
            again = _run(cfg)
        assert not again.cached  # recomputed, not served
        rec_path.write_text(json.dumps(rec))
    copied = stores / "ledger" / "smoke_fm_act_bound_iid_s0_0123456789ab.json"  # a record under another run's name
    shutil.copy(rec_path, copied)
    with pytest.raises(lg.LedgerError, match="not"):
        lg.read_record(copied)
    copied.write_text(json.dumps({"format": 1, "text": None, "files": []}))  # malformed: refused, not a crash
    with pytest.raises(lg.LedgerError, match="malformed|not mappings"):
        lg.read_record(copied)
    # an edited config with every checksum recomputed still does not give its own run key
    forged = json.loads(rec_path.read_text())
    meta["config"]["fl"]["lr"] = meta["config"]["fl"]["lr"] * 2
    forged["text"]["config.json"] = json.dumps(meta, indent=2)
    forged["files"]["config.json"] = hashlib.sha256(forged["text"]["config.json"].encode()).hexdigest()
    forged["config_key"] = lg.config_key(meta["config"])
    forged["sha256"] = lg._self_digest(forged)
    assert any("not the key of its own config" in m for m in lg.check_record(forged, rec_path.stem))


@pytest.mark.smoke
def test_a_record_of_other_code_is_superseded_and_records_stay_small(stores):
    cfg = pr.load_config("smoke", attack={"kind": "classic"}, defense={"name": "median"})
    res = _run(cfg, ledger=True)
    path = stores / "ledger" / f"{res.run_dir.name}.json"
    old = path.with_name(res.run_dir.name[:-12] + "aaaaaaaaaaaa.json")  # the same cell made by other code
    rec = json.loads(path.read_text())
    path.rename(old)
    lg.write_record(res.run_dir)
    assert path.is_file() and not old.exists()
    assert json.loads(path.read_text())["config_key"] == rec["config_key"]
    assert max(p.stat().st_size for p in lg.records()) <= 10_000


@pytest.mark.unit
def test_every_committed_ledger_record_is_intact_and_within_budget():
    recs = lg.records(REPO / "data" / "ledger")
    assert recs, "the committed ledger is empty"
    for p in recs:
        lg.read_record(p)
        assert p.stat().st_size <= 13_000, f"{p.name}: {p.stat().st_size} bytes (budget: docs/ledger.md)"


def _recompute_cmd(tables: Path, budget: float = 30) -> list[str]:
    return [
        sys.executable,
        "-m",
        "paper_repro",
        "recompute",
        "grid",
        "--profile",
        "smoke",
        "--tables-dir",
        str(tables),
        "--budget",
        str(budget),
    ]


def _env(tmp: Path, ledger: str) -> dict:
    return {
        **os.environ,
        "PAPER_REPRO_LEDGER": str(tmp / ledger),
        "PAPER_REPRO_RESULTS": str(tmp / f"res_{ledger}"),
        "PAPER_REPRO_PROGRESS": "off",
    }


@pytest.mark.smoke
def test_a_recompute_killed_three_times_gives_the_uninterrupted_table(tmp_path):
    whole, parts = tmp_path / "tables_whole", tmp_path / "tables_parts"
    _smoke_table(whole, SMOKE_CELLS + MORE_CELLS), _smoke_table(parts, SMOKE_CELLS + MORE_CELLS)
    subprocess.run(_recompute_cmd(whole), env=_env(tmp_path, "a"), check=True, capture_output=True, timeout=600)
    rng = random.Random(0)
    for _ in range(3):  # killed at three random moments inside the work, each time resumed by a new process
        before = len(lg.records(tmp_path / "b"))
        proc = subprocess.Popen(
            _recompute_cmd(parts),
            env=_env(tmp_path, "b"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while len(lg.records(tmp_path / "b")) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until it has recorded a run of its own: the kill lands among later runs
        time.sleep(rng.uniform(0, 1.5))  # somewhere among the next few runs
        assert proc.poll() is None, "the recompute finished before it could be killed: the test would prove nothing"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for p in lg.records(tmp_path / "b"):  # whatever instant it died at, every record is whole
            lg.read_record(p)
        shutil.rmtree(tmp_path / "res_b", ignore_errors=True)  # and the machine goes: only the ledger is kept
    out = subprocess.run(
        _recompute_cmd(parts), env=_env(tmp_path, "b"), check=True, capture_output=True, text=True, timeout=600
    )
    assert "rebuilt from the ledger" in out.stdout
    a, b = pd.read_csv(whole / "grid_smoke.csv"), pd.read_csv(parts / "grid_smoke.csv")
    assert len(a) == len(SMOKE_CELLS + MORE_CELLS)
    pd.testing.assert_frame_equal(a.drop(columns=[*TIMING]), b.drop(columns=[*TIMING]))


@pytest.mark.smoke
def test_a_budget_stops_the_recompute_cleanly_and_the_table_names_what_it_lacks(stores):
    from paper_repro.studies import recompute as rc

    tables = _smoke_table(stores / "tables").parent
    ticks = iter(range(0, 10_000, 60))  # a clock that moves one minute per reading: each batch "takes" a minute
    lines = []
    summary = rc.recompute(
        ["grid"],
        "smoke",
        budget_minutes=2.5,
        tables_dir=tables,
        progress=False,
        log=lines.append,
        clock=lambda: next(ticks),
    )
    assert summary["grid_smoke"]["rebuilt"] is False
    assert any("budget reached after 4.0 min" in ln for ln in lines) and any("still lacks" in ln for ln in lines)
    first = rc.batches(rc.plan("grid", "smoke", tables).cells, 1, RunOptions.for_profile("smoke"))[0]
    assert len(lg.records()) == len(first) < len(SMOKE_CELLS)  # its first batch is kept; nothing else started


@pytest.mark.smoke
def test_staleness_follows_the_code_of_the_runs_closure(stores):
    from paper_repro.studies import recompute as rc

    tables = _smoke_table(stores / "tables").parent
    rc.recompute(["grid"], "smoke", budget_minutes=30, tables_dir=tables, progress=False, log=lambda s: None)
    root = stores / "copy" / "paper_repro"
    shutil.copytree(PKG, root, ignore=shutil.ignore_patterns("__pycache__"))

    def line():
        return rc.status(rc.plan("grid", "smoke", tables), rc.Found.read(), root).line()

    assert line().startswith("grid_smoke: fresh")
    (root / "plots.py").write_text((root / "plots.py").read_text() + "\nX = 1\n")  # outside every run's closure
    (root / "defenses" / "mars.py").write_text((root / "defenses" / "mars.py").read_text() + "\nX = 1\n")
    fl = root / "fl.py"
    fl.write_text(fl.read_text().replace('"""', '"""Edited documentation. ', 1))  # a docstring
    assert line().startswith("grid_smoke: fresh")
    fl.write_text(fl.read_text() + "\n_EDITED = 1\n")  # code every run executes
    assert f"{len(SMOKE_CELLS)} cells stale (fl.py changed)" in line()
    mm = root / "defenses" / "mm_bm.py"
    fl.write_text(fl.read_text().replace("\n_EDITED = 1\n", "\n"))
    mm.write_text(mm.read_text() + "\n_EDITED = 1\n")  # one defense's own file: only its runs
    assert "1 cells stale (defenses/mm_bm.py changed)" in line()
    # fresh again once the edited code has recomputed them (the copy runs in a process of its own)
    env = {**os.environ, "PYTHONPATH": str(root.parent), "PAPER_REPRO_PROGRESS": "off"}
    out = subprocess.run(
        [sys.executable, "-m", "paper_repro", "recompute", "grid", "--profile", "smoke", "--tables-dir", str(tables)],
        env=env,
        cwd=root.parent,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "1 cells stale" in out.stdout and "rebuilt" in out.stdout
    assert line().startswith("grid_smoke: fresh")


@pytest.mark.unit
def test_records_written_during_a_recompute_do_not_make_its_tree_dirty(tmp_path, monkeypatch):
    from paper_repro import results, store

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "data" / "ledger").mkdir(parents=True)
    (tmp_path / "data" / "tables").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "data" / "ledger" / "old.json").write_text("{}\n")
    (tmp_path / "data" / "tables" / "t_quick.csv").write_text("a\n1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(store, "REPO_ROOT", tmp_path)
    assert results.git_state()["dirty"] is False
    (tmp_path / "data" / "ledger" / "old.json").unlink()  # a record superseded by the recompute
    assert results.git_state()["dirty"] is False
    (tmp_path / "data" / "tables" / "t_quick.csv").write_text("a\n2\n")  # a study rewrites its table as it goes
    assert results.git_state()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.git_state()["dirty"] is True


@pytest.mark.unit
def test_cells_that_share_a_run_count_once_each():
    from paper_repro.studies import plans

    cfg = pr.load_config("smoke")
    cell = plans.Cell({"value": 1}, cfg, lg.config_key(cfg.to_dict()))
    twin = plans.Cell({"value": 2}, cfg, cell.key)  # another label, the same run (an ablation's default point)
    p = plans.Plan("ablations", "smoke", Path("ablations_smoke.csv"), plans.FAMILIES["ablations"], [cell, twin])
    st = plans.Status(p, {cell.key: {}}, {}, [])
    assert st.complete and st.count(st.fresh) == 2
    assert st.line().startswith("ablations_smoke: fresh (2 cells, 1 runs")
    half = plans.Status(p, {}, {}, [cell, twin])
    assert not half.complete and "2 cells missing of 2 (fresh: 0)" in half.line()


@pytest.mark.unit
def test_every_module_of_a_closure_changes_the_key_of_the_caches_that_depend_on_it(tmp_path):
    from paper_repro import codehash as ch
    from paper_repro.attacks import FMPoisoning
    from paper_repro.defenses import ActBound
    from paper_repro.fl import init_global_model
    from paper_repro.fm.ddpm import ClassConditionalDDPM
    from paper_repro.fm.draw import draw_synthetic

    root = tmp_path / "paper_repro"
    shutil.copytree(PKG, root, ignore=shutil.ignore_patterns("__pycache__"))
    caches = {
        "run": ch.start_files("runner.py", FMPoisoning, ActBound),
        "initial model": ch.start_files(init_global_model),
        "synthetic set": ch.start_files(draw_synthetic, ClassConditionalDDPM),
    }
    assert "precision.py" in ch.code_files(*caches["initial model"]) | ch.code_files(*caches["synthetic set"])
    assert "config.py" not in ch.code_files(*caches["synthetic set"])  # imported for annotations only
    for name, start in caches.items():
        before = ch.code_digest_of(*start, root=root)
        for rel in ch.import_closure(start, root):
            f = root / rel
            text = f.read_text()
            f.write_text(text + "\n_EDITED = 1\n")
            computing = ch._info(f)[0] == "computing"
            assert (ch.code_digest_of(*start, root=root) != before) == computing, (name, rel)
            f.write_text(text)
        assert ch.code_digest_of(*start, root=root) == before
    for hand_list in ("NOT_COMPUTING", "INIT_CODE", "SAMPLER_CODE", "REGISTRIES"):  # no hand-written file lists
        assert not any(hand_list in p.read_text() for p in PKG.rglob("*.py")), hand_list


@pytest.mark.unit
def test_committed_figures_carry_the_digest_that_make_figures_would_record_now():
    from paper_repro import figstamp

    pngs = sorted((REPO / "figures").glob("*.png"))
    assert pngs
    stale = []
    for p in pngs:
        stamp = figstamp.read(p)
        assert stamp is not None, f"{p.name} carries no stamp: regenerate it with `make figures`"
        assert stamp["notebook"] and stamp["tables"], p.name
        if figstamp.expected(stamp)["digest"] != stamp["digest"]:
            stale.append(p.name)
    assert not stale, f"out of date (run `make figures` and commit them): {stale}"


@pytest.mark.unit
def test_a_figure_whose_table_or_plotting_code_changed_is_out_of_date(tmp_path):
    from paper_repro import figstamp

    stamp = figstamp.read(REPO / "figures" / "fig04_defenses_iid.png")
    for rel in ("paper_repro", "notebooks/figures", "data/tables"):
        shutil.copytree(REPO / rel, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__"))
    assert figstamp.expected(stamp, tmp_path)["digest"] == stamp["digest"]
    grid = tmp_path / "data" / "tables" / "grid_quick.csv"
    grid.write_text(grid.read_text().replace("0.8", "0.7", 1))
    assert figstamp.expected(stamp, tmp_path)["digest"] != stamp["digest"]
    shutil.copy(REPO / "data" / "tables" / "grid_quick.csv", grid)
    plots = tmp_path / "paper_repro" / "plots.py"
    plots.write_text(plots.read_text().replace('"figure.dpi": 100', '"figure.dpi": 101'))
    assert figstamp.expected(stamp, tmp_path)["digest"] != stamp["digest"]


@pytest.mark.unit
def test_the_shipped_synthetic_set_is_the_draw_the_current_code_would_make():
    import numpy as np

    from paper_repro.fm.synthetic import SHIPPED, read_synthetic, synthetic_key
    from paper_repro.store import resolve_path, stable_hash

    for n in (200, 100, 50):  # the quick profile's set and the size ablation's
        cfg = pr.load_config("quick", fm={"n_per_class": n})
        key = synthetic_key(cfg, resolve_path(cfg.fm.checkpoint))
        path = SHIPPED / f"ddpm_{stable_hash(key)}.npz"
        assert path.is_file(), (
            f"no shipped draw for n_per_class={n} under the current sampler code: ship it with "
            "`python -m paper_repro.fm ship` (docs/ledger.md)"
        )
        s = read_synthetic(path, key)
        assert len(s) == 10 * n and np.bincount(s.y).tolist() == [n] * 10
    with pytest.raises(ValueError, match="another key"):
        read_synthetic(path, {**key, "seed": key["seed"] + 1})


@pytest.mark.unit
def test_a_table_row_the_code_no_longer_plans_names_the_row_and_the_command_that_remakes_it(tmp_path):
    from paper_repro.studies import plans

    rows = [("FM patch", "none", 10), ("3DFed", "none", 10)]  # a label the attack study has renamed since
    pd.DataFrame(rows, columns=["attack", "defense", "seed"]).to_csv(tmp_path / "attack_breadth_quick.csv", index=False)
    with pytest.raises(ValueError, match=r"'3DFed'.*remake it with `python -m paper_repro attacks --profile quick`"):
        plans.plan("attack_breadth", "quick", tmp_path)
