"""A resumable recompute of the committed tables through the run ledger: the missing and stale cells of their plans
(:mod:`paper_repro.studies.plans`) computed within a time budget, each run recorded as it finishes, and every
complete table rebuilt from the ledger alone.

    python -m paper_repro recompute grid heldout --budget 90 --jobs 2
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd

from .. import ledger as lg
from ..codehash import PACKAGE
from ..options import RunOptions, options_for
from ..progress import tqdm
from ..results import provenance_of
from ..store import save_atomic
from ..tables import table_path, write_csv
from .plans import NOT_FROM_RUNS, Cell, Found, Plan, Status, _meta, family_of, plan, status, table_names

__all__ = ["recompute", "build_table", "write_table", "selected", "check_tables", "plan", "status", "Found"]


def check_tables(
    profile: str = "quick", tables_dir: str | Path | None = None, ledger: Path | None = None, root: Path = PACKAGE
) -> list[str]:
    """One line per committed table of ``profile``: fresh, N runs stale (which files changed), N cells missing; or
    what makes a table that is not made of runs."""
    found = Found.read(ledger)
    out = [
        f"ledger: {sum(map(len, found.by_key.values())) + len(found.damaged)} records"
        + (f", {len(found.damaged)} damaged: {found.damaged[0]}" if found.damaged else "")
    ]
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


def write_table(p: Plan, st: Status, tables_dir: str | Path | None = None) -> Path:
    """Write the rebuilt table (and its provenance, read from the records) over the committed one."""
    out = table_path(p.kind, p.profile, tables_dir or p.path.parent)
    df = build_table(p, st)
    recs = [st.fresh[c.key] for c in p.cells]
    # atomically, table last: a kill leaves the old table (the plan is read from its rows) or the whole new one
    save_atomic(
        lambda tmp: tmp.write_text(json.dumps(provenance_of([_meta(r) for r in recs]), indent=1) + "\n"),
        out.with_suffix(".provenance.json"),
    )
    return write_csv(df, out, p.family.float_format)


def selected(p: Plan, where: dict[str, str] | None) -> list[Cell]:
    """The cells of ``p`` whose labels match every ``label=value`` of ``where`` (compared as text; a label the table
    does not have matches nothing)."""
    if not where:
        return p.cells
    return [c for c in p.cells if all(k in c.labels and str(c.labels[k]) == str(v) for k, v in where.items())]


def batches(todo: list[Cell], jobs: int, opts: RunOptions) -> list[list[Cell]]:
    """``todo`` cut into batches of at least ``jobs`` cells, each no-defense run in the batch of the post-fusion
    defenses served from its training (their order otherwise kept), so that no training runs twice and a budget stop
    falls between whole groups."""
    from dataclasses import replace

    from ..config import DefenseConfig
    from ..runner import shares_training

    groups: dict[str, list[Cell]] = {}
    for c in todo:
        base = replace(c.config, defense=DefenseConfig()) if shares_training(c.config, opts) else c.config
        groups.setdefault(lg.config_key(base.to_dict()), []).append(c)
    out, batch = [], []
    for group in groups.values():
        batch += sorted(group, key=lambda c: c.config.defense.name != "none")  # the base first
        if len(batch) >= jobs:
            out.append(batch)
            batch = []
    return out + ([batch] if batch else [])


def recompute(
    kinds: list[str] | None = None,
    profile: str = "quick",
    budget_minutes: float = 60.0,
    jobs: int = 1,
    tables_dir: str | Path | None = None,
    progress: bool = True,
    options: RunOptions | None = None,
    log=print,
    where: dict[str, str] | None = None,
    clock=time.perf_counter,
) -> dict:
    """Compute the missing and stale cells of the named committed tables (default: every table made of runs) in a
    fixed order (tables as named, rows in table order), recording each run in the ledger as it finishes; start no
    batch of ``jobs`` runs that would end past ``budget_minutes``; then rebuild every table whose cells are all
    fresh from the ledger alone. ``where`` (label → value) computes only the matching cells. Killed at any instant,
    it loses at most the runs in flight; run again, on any machine, it continues. Returns per table: counts before,
    and whether it was rebuilt. ``clock``: seconds, for the budget (tests pass their own)."""
    if budget_minutes <= 0:
        raise ValueError(f"budget_minutes={budget_minutes} must be > 0")
    kinds = kinds or [k for k in table_names(profile, tables_dir) if family_of(k) is not None]
    plans = [plan(k, profile, tables_dir) for k in kinds]
    opts = options_for(profile, options)
    from dataclasses import replace

    opts = replace(opts, ledger=True, jobs=jobs)
    found = Found.read()
    todo, seen, summary = [], set(), {}
    for p in plans:
        st = status(p, found)
        summary[p.name] = {
            "cells": len(p.cells),
            "fresh": st.count(st.fresh),
            "stale": st.count(st.stale),
            "missing": len(st.missing),
        }
        log(st.line())
        for c in selected(p, where):
            if c.key not in st.fresh and c.key not in seen:
                seen.add(c.key)
                todo.append(c)
    log(f"to compute: {len(todo)} runs (budget {budget_minutes:g} min, {jobs} at a time)")
    from ..runner import run_many

    t0, batch_seconds, done = clock(), [], 0
    bar = tqdm(total=len(todo), desc="recompute", disable=not progress)
    for batch in batches(todo, jobs, opts):
        elapsed = clock() - t0
        expected = max(batch_seconds) if batch_seconds else 0.0
        if elapsed + expected > 60 * budget_minutes:
            log(
                f"budget reached after {elapsed / 60:.1f} min: {len(todo) - done} runs left; run the same command "
                "again (on any machine) to continue"
            )
            break
        t = clock()
        run_many([c.config for c in batch], progress=False, options=opts)
        batch_seconds.append(clock() - t)
        done += len(batch)
        bar.update(len(batch))
    bar.close()
    found = Found.read()
    for p in plans:
        st = status(p, found)
        if st.complete:
            write_table(p, st, tables_dir)
            summary[p.name]["rebuilt"] = True
            log(f"{p.name}: rebuilt from the ledger ({len(p.cells)} runs)")
        else:
            summary[p.name]["rebuilt"] = False
            lack = [c.labels for c in p.cells if c.key not in st.fresh]
            log(f"{p.name}: still lacks {len(lack)} cells (e.g. {lack[:2]}); the committed table is left as it is")
    summary["_seconds"] = round(clock() - t0, 1)
    return summary
