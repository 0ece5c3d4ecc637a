"""Committed tables as plans of runs: which cells a table needs, whether the ledger holds them made by the current
code (fresh), by other code (stale, with the files that changed) or not at all (missing), a resumable recompute of
what is missing within a time budget, and every table rebuilt from the ledger alone.

A committed per-run table names its cells in its label columns (``defense, attack, partition, seed`` for the grid;
``setting, attack, defense, seed`` for the held-out family; ...); the table's study turns a row of labels into the
run's config (:data:`FAMILIES`), so the plan of a table is its own rows. A cell's record is found by the hash of its
config's key part (:func:`paper_repro.ledger.config_key`), and it is fresh when every file of its recorded import
closure has the same code now and the libraries have the same versions.

    python -m paper_repro check-tables                  # one line per table
    python -m paper_repro recompute grid heldout --budget 90 --jobs 2
"""
from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import ledger as lg
from ..codehash import PACKAGE, changed_files, library_versions
from ..config import Config
from ..options import RunOptions
from ..progress import tqdm
from ..tables import TABLES_DIR, table_path
from .grid import ROUND_COLUMNS, grid_config, summarise

NOT_FROM_RUNS = {
    "activations": "the activation study (`python -m paper_repro results`): scores of single images, no run record",
    "activation_metrics": "the activation study (`python -m paper_repro results`)",
    "attack_adaptive": "derived from attack_breadth and attack_strength (`python -m paper_repro attacks --study "
                       "adaptive`)",
    "published": "the papers' published numbers (typed in, not computed)",
}
"""Committed tables that are not made of runs, with what makes them: the ledger says nothing about them."""


@dataclass(frozen=True)
class Family:
    """How a kind of table maps a row of labels to a run config and a run's metrics to its rows."""

    labels: tuple[str, ...]
    config: Callable[[str, dict, Path], Config]
    """(profile, labels, tables folder) → the cell's config."""
    rows: Callable[[dict, pd.DataFrame, str], list[dict]]
    """(labels, per-round history, run name) → the table's rows for that run."""
    float_format: str = "%.5g"


def _summary_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    return [{**labels, **summarise(history), "run": run}]


def _round_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    cols = [c for c in ROUND_COLUMNS if c in history and c not in labels]
    return [{**labels, **r} for r in history[cols].to_dict("records")]


def _heldout_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .heldout import ACT_BOUND_VARIANTS, setting_config

    name = str(labels["defense"])
    if name.startswith("mars eps"):  # MARS at the calibrated epsilon: the calibration table's rule
        cal = pd.read_csv(table_path("mars_calibration", profile, tables_dir))
        variant = ("mars", {"epsilon": round(float(cal["centre_distance"].max()), 4)})
    else:
        variant = ACT_BOUND_VARIANTS.get(name, name)
    return setting_config(profile, str(labels["setting"]), variant, int(labels["seed"]), str(labels["attack"]))


def _attack_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .attacks import ATTACKS, attack_config

    return attack_config(profile, ATTACKS[str(labels["attack"])], str(labels["defense"]), int(labels["seed"]))


def _attack_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    from .attacks import ATTACKS

    out = {k: labels[k] for k in labels if k not in ("defense", "seed")}
    kind = ATTACKS[labels["attack"]]["kind"] if "attack" in labels else "fm"
    return [{**out, "kind": kind, "defense": labels["defense"], "seed": labels["seed"], **summarise(history),
             "run": run}]


def _strength_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .attacks import STRENGTH, attack_config

    change = _match(labels["value"], dict(STRENGTH[str(labels["knob"])]), f"knob {labels['knob']!r}")
    return attack_config(profile, {"kind": "fm", **change}, str(labels["defense"]), int(labels["seed"]))


def _match(value, options: dict, what: str):
    """The entry of ``options`` whose key is ``value`` as a label (CSV turns "0.05" into 0.05)."""
    for k, v in options.items():
        try:
            if str(k) == str(value) or float(k) == float(value):
                return v
        except (TypeError, ValueError):
            continue
    raise KeyError(f"{what} has no value {value!r} (known: {list(options)})")


def _mars_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .heldout import setting_config

    return setting_config(profile, "validation", "mars", int(labels["seed"]), attack="none")


def _mars_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    return [{"seed": labels["seed"], "round": int(r["round"]), "centre_distance": float(r["defense_centre_distance"]),
             "run": run} for _, r in history.iterrows() if r["round"] > 0]


def _ablation_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .ablations import ABLATIONS, ablation_config

    a = ABLATIONS[str(labels["ablation"])]
    value = _match(labels["value"], {v: v for v in a.values}, f"ablation {a.name!r}")
    return ablation_config(profile, a, value, str(labels["defense"]), int(labels["seed"]))


def _ablation_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    from .ablations import ABLATIONS

    last = history.iloc[-1]
    return [{"ablation": labels["ablation"], "label": ABLATIONS[labels["ablation"]].label, "value": labels["value"],
             "defense": labels["defense"], "seed": labels["seed"], "acc": last["acc"], "asr": last["asr"], "run": run}]


GRID_LABELS = ("defense", "attack", "partition", "seed")
HELDOUT_LABELS = ("setting", "attack", "defense", "seed")
FAMILIES: dict[str, Family] = {
    "grid": Family(GRID_LABELS, lambda p, lab, _: grid_config(p, lab["attack"], lab["defense"], lab["partition"],
                                                              int(lab["seed"])), _summary_rows),
    "rounds": Family(GRID_LABELS, lambda p, lab, _: grid_config(p, lab["attack"], lab["defense"], lab["partition"],
                                                                int(lab["seed"])), _round_rows),
    "heldout": Family(HELDOUT_LABELS, _heldout_config, _summary_rows),
    "attack_breadth": Family(("attack", "defense", "seed"), _attack_config, _attack_rows),
    "attack_strength": Family(("knob", "value", "defense", "seed"), _strength_config, _attack_rows),
    "mars_calibration": Family(("seed",), _mars_config, _mars_rows, "%.6g"),
    "ablations": Family(("ablation", "value", "defense", "seed"), _ablation_config, _ablation_rows),
}
"""Table kind → family; the held-out family also holds the act_bound and MARS validation tables (see
:func:`family_of`)."""


def family_of(kind: str) -> Family | None:
    """The family of a table kind (``heldout_all_to_all``, ``act_bound_validation``, ``mars_validation``, ... are
    held-out tables), or None for a table not made of runs."""
    if kind in FAMILIES:
        return FAMILIES[kind]
    if kind.startswith(("heldout_", "act_bound_")) or kind == "mars_validation":
        return FAMILIES["heldout"]
    return None


@dataclass
class Cell:
    labels: dict
    config: Config
    key: str
    """:func:`paper_repro.ledger.config_key` of the config."""


@dataclass
class Plan:
    """The cells of one committed table, in its row order."""

    kind: str
    profile: str
    path: Path
    family: Family
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.path.stem


def table_names(profile: str = "quick", tables_dir: str | Path | None = None) -> list[str]:
    """Kinds of the committed tables of ``profile`` (``grid``, ``heldout``, ...), sorted."""
    base = Path(tables_dir or TABLES_DIR)
    return sorted(p.name[: -len(f"_{profile}.csv")] for p in base.glob(f"*_{profile}.csv"))


def plan(kind: str, profile: str = "quick", tables_dir: str | Path | None = None) -> Plan:
    """The plan of the committed table ``<kind>_<profile>.csv``: one cell per distinct row of labels."""
    base = Path(tables_dir or TABLES_DIR)
    path = table_path(kind, profile, base)
    fam = family_of(kind)
    if fam is None:
        raise ValueError(f"{path.name} is not made of runs ({NOT_FROM_RUNS.get(kind, 'no study plans it')}): "
                         "there is nothing to recompute through the ledger")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a plan is read from a committed table's rows; known tables "
                                f"of {profile}: {table_names(profile, base)}")
    df = pd.read_csv(path)
    rows = df[list(fam.labels)].drop_duplicates()
    cells = []
    for labels in rows.to_dict("records"):
        labels = {k: (int(v) if k == "seed" else v) for k, v in labels.items()}
        cfg = fam.config(profile, labels, base)
        cells.append(Cell(labels, cfg, lg.config_key(cfg.to_dict())))
    return Plan(kind, profile, path, fam, cells)


@dataclass
class Found:
    """The ledger's records by config key, read once."""

    by_key: dict[str, list[dict]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, ledger: Path | None = None) -> Found:
        out = cls()
        for p in lg.records(ledger):
            try:
                rec = lg.read_record(p)
            except lg.LedgerError as e:
                out.damaged.append(str(e))
                continue
            out.by_key.setdefault(rec["config_key"], []).append(rec)
        return out


def _meta(rec: dict) -> dict:
    return json.loads(rec["text"]["config.json"])


def why_stale(rec: dict, root: Path = PACKAGE) -> list[str]:
    """Why a record is not what the current code would make: the files of its closure whose code changed, and the
    libraries whose versions changed (empty: fresh)."""
    meta = _meta(rec)
    out = changed_files(meta.get("code_files") or {"(no per-file digests recorded)": ""}, root)
    libs = library_versions()
    out += [f"{lib} {v} → {libs.get(lib)}" for lib, v in (meta["hashes"].get("libraries") or {}).items()
            if libs.get(lib) != v]
    return out


@dataclass
class Status:
    """Per cell of a plan: its fresh record, or why its records are stale, or nothing (missing)."""

    plan: Plan
    fresh: dict[str, dict]
    stale: dict[str, list[str]]
    missing: list[Cell]

    def line(self) -> str:
        n = len(self.plan.cells)
        if len(self.fresh) == n:
            return f"{self.plan.name}: fresh ({n} runs in the ledger, made by the current code)"
        parts = []
        if self.stale:
            files = Counter(f for why in self.stale.values() for f in why)
            top = ", ".join(f for f, _ in files.most_common(4)) + (" ..." if len(files) > 4 else "")
            parts.append(f"{len(self.stale)} runs stale ({top} changed)")
        if self.missing:
            parts.append(f"{len(self.missing)} cells missing")
        return f"{self.plan.name}: {'; '.join(parts)} of {n} (fresh: {len(self.fresh)})"


def status(p: Plan, found: Found, root: Path = PACKAGE) -> Status:
    fresh, stale, missing = {}, {}, []
    for cell in p.cells:
        recs = found.by_key.get(cell.key, [])
        whys = [why_stale(r, root) for r in recs]
        ok = [r for r, why in zip(recs, whys) if not why]
        if ok:
            fresh[cell.key] = ok[0]
        elif recs:
            stale[cell.key] = sorted({f for why in whys for f in why})
        else:
            missing.append(cell)
    return Status(p, fresh, stale, missing)


def check_tables(profile: str = "quick", tables_dir: str | Path | None = None, ledger: Path | None = None,
                 root: Path = PACKAGE) -> list[str]:
    """One line per committed table of ``profile``: fresh, N runs stale (which files changed), N cells missing; or
    what makes a table that is not made of runs."""
    found = Found.read(ledger)
    out = [f"ledger: {len(lg.records(ledger))} records"
           + (f", {len(found.damaged)} damaged: {found.damaged[0]}" if found.damaged else "")]
    for kind in table_names(profile, tables_dir):
        if family_of(kind) is None:
            out.append(f"{kind}_{profile}: not made of runs, not checked ({NOT_FROM_RUNS.get(kind, 'unknown')})")
            continue
        try:
            out.append(status(plan(kind, profile, tables_dir), found, root).line())
        except (KeyError, ValueError) as e:
            out.append(f"{kind}_{profile}: cannot be planned ({type(e).__name__}: {e})")
    return out


def build_table(p: Plan, st: Status) -> pd.DataFrame:
    """The table of a plan from its fresh ledger records alone (no run folder read)."""
    rows = []
    for cell in p.cells:
        rec = st.fresh[cell.key]
        history = pd.read_csv(io.StringIO(rec["text"]["metrics.csv"]))
        rows += p.family.rows(cell.labels, history, rec["run"])
    return pd.DataFrame(rows)


def provenance(recs: list[dict]) -> dict:
    """What made a set of records: commits (with dirty flag), run code digests, libraries, run options and
    machines, with how many runs each."""
    seen: dict[str, Counter] = {f: Counter() for f in ("git", "code", "versions", "options", "machine")}
    for rec in recs:
        meta = _meta(rec)
        for f, v in (("git", meta.get("git")), ("code", meta["hashes"].get("code")), ("versions", meta.get("versions")),
                     ("options", meta.get("options")), ("machine", meta.get("machine"))):
            seen[f][json.dumps(v, sort_keys=True)] += 1
    return {f: [{"value": json.loads(v), "runs": n} for v, n in c.most_common()] for f, c in seen.items()}


def write_table(p: Plan, st: Status, tables_dir: str | Path | None = None) -> Path:
    """Write the rebuilt table (and its provenance, read from the records) over the committed one."""
    out = table_path(p.kind, p.profile, tables_dir or p.path.parent)
    build_table(p, st).to_csv(out, index=False, float_format=p.family.float_format)
    recs = [st.fresh[c.key] for c in p.cells]
    out.with_suffix(".provenance.json").write_text(json.dumps(provenance(recs), indent=1) + "\n")
    return out


def selected(p: Plan, where: dict[str, str] | None) -> list[Cell]:
    """The cells of ``p`` whose labels match every ``label=value`` of ``where`` (compared as text; a label the table
    does not have matches nothing)."""
    if not where:
        return p.cells
    return [c for c in p.cells if all(k in c.labels and str(c.labels[k]) == str(v) for k, v in where.items())]


def recompute(kinds: list[str] | None = None, profile: str = "quick", budget_minutes: float = 60.0, jobs: int = 1,
              tables_dir: str | Path | None = None, progress: bool = True, options: RunOptions | None = None,
              log=print, where: dict[str, str] | None = None) -> dict:
    """Compute the missing and stale cells of the named committed tables (default: every table made of runs) in a
    fixed order (tables as named, rows in table order), recording each run in the ledger as it finishes; start no
    batch of ``jobs`` runs that would end past ``budget_minutes``; then rebuild every table whose cells are all
    fresh from the ledger alone. ``where`` (label → value) computes only the matching cells. Killed at any instant, it loses at most the runs in flight; run again, on any
    machine, it continues. Returns per table: counts before, and whether it was rebuilt."""
    if budget_minutes <= 0:
        raise ValueError(f"budget_minutes={budget_minutes} must be > 0")
    kinds = kinds or [k for k in table_names(profile, tables_dir) if family_of(k) is not None]
    plans = [plan(k, profile, tables_dir) for k in kinds]
    opts = options or RunOptions.for_profile(profile)
    from dataclasses import replace

    opts = replace(opts, ledger=True, jobs=jobs)
    found = Found.read()
    todo, seen, summary = [], set(), {}
    for p in plans:
        st = status(p, found)
        summary[p.name] = {"cells": len(p.cells), "fresh": len(st.fresh), "stale": len(st.stale),
                           "missing": len(st.missing)}
        log(st.line())
        for c in selected(p, where):
            if c.key not in st.fresh and c.key not in seen:
                seen.add(c.key)
                todo.append(c)
    log(f"to compute: {len(todo)} runs (budget {budget_minutes:g} min, {jobs} at a time)")
    from ..runner import run_many

    t0, batch_seconds, done = time.perf_counter(), [], 0
    bar = tqdm(total=len(todo), desc="recompute", disable=not progress)
    for i in range(0, len(todo), jobs):
        elapsed = time.perf_counter() - t0
        expected = max(batch_seconds) if batch_seconds else 0.0
        if elapsed + expected > 60 * budget_minutes:
            log(f"budget reached after {elapsed / 60:.1f} min: {len(todo) - done} runs left; run the same command "
                "again (on any machine) to continue")
            break
        t = time.perf_counter()
        batch = todo[i:i + jobs]
        run_many([c.config for c in batch], progress=False, options=opts)
        batch_seconds.append(time.perf_counter() - t)
        done += len(batch)
        bar.update(len(batch))
    bar.close()
    found = Found.read()
    for p in plans:
        st = status(p, found)
        if len(st.fresh) == len(p.cells):
            write_table(p, st, tables_dir)
            summary[p.name]["rebuilt"] = True
            log(f"{p.name}: rebuilt from the ledger ({len(p.cells)} runs)")
        else:
            summary[p.name]["rebuilt"] = False
            lack = [c.labels for c in p.cells if c.key not in st.fresh]
            log(f"{p.name}: still lacks {len(lack)} cells (e.g. {lack[:2]}); the committed table is left as it is")
    summary["_seconds"] = round(time.perf_counter() - t0, 1)
    return summary
