"""Committed tables as plans of runs: which cells a table needs, and whether the ledger holds them made by the
current code (fresh), by other code (stale, with the files that changed) or not at all (missing).
:mod:`paper_repro.studies.recompute` computes what is missing and rebuilds the tables.

A committed per-run table names its cells in its label columns (``defense, attack, partition, seed`` for the grid;
``setting, attack, defense, seed`` for the held-out family; ...); the table's study turns a row of labels into the
run's config (:data:`FAMILIES`), so the plan of a table is its own rows. A cell's record is found by the hash of its
config's key part (:func:`paper_repro.ledger.config_key`), and it is fresh when every file of its recorded import
closure has the same code now and the libraries have the same versions.

    python -m paper_repro check-tables                  # one line per table
    python -m paper_repro recompute grid heldout --budget 90 --jobs 2
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import ledger as lg
from ..codehash import PACKAGE, changed_files, library_versions
from ..config import Config
from ..metrics import summarise
from ..tables import TABLES_DIR, table_path
from .grid import ROUND_COLUMNS, grid_config

NOT_FROM_RUNS = {
    "activations": "the activation study (`python -m paper_repro results`): scores of single images, no run record",
    "activation_metrics": "the activation study (`python -m paper_repro results`)",
    "attack_adaptive": "derived from attack_breadth and attack_strength (`python -m paper_repro attacks --study "
    "adaptive`)",
    "published": "the papers' published numbers (typed in, not computed)",
    "amplification": "H2's margin decomposition of trained models (`python -m paper_repro.studies.amplification`)",
    "mmac_centralised": "MMAC, MM-BM and act_bound in MMAC's own centralised setting, not FL runs "
    "(`python benchmarks/mmac_centralised.py`)",
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
    from .heldout import DEFENSE_VARIANTS, setting_config

    name = str(labels["defense"])
    if name.startswith("mars eps"):  # MARS at the calibrated epsilon: the calibration table's rule
        cal = pd.read_csv(table_path("mars_calibration", profile, tables_dir))
        eps = float(cal["centre_distance"].max())
        if name != f"mars eps{eps:.3g}":  # the label was written from the calibration that made the table
            raise ValueError(
                f"the row {name!r} was made with another MARS calibration than the committed one "
                f"(epsilon {eps:.4g} now): recompute it with benchmarks/mars_epsilon.py"
            )
        variant = ("mars", {"epsilon": round(eps, 4)})
    else:
        variant = DEFENSE_VARIANTS.get(name, name)
    return setting_config(profile, str(labels["setting"]), variant, int(labels["seed"]), str(labels["attack"]))


def _attack_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .attacks import ATTACKS, attack_config

    return attack_config(profile, ATTACKS[str(labels["attack"])], str(labels["defense"]), int(labels["seed"]))


def _attack_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    from .attacks import ATTACKS

    out = {k: labels[k] for k in labels if k not in ("defense", "seed")}
    kind = ATTACKS[labels["attack"]]["kind"] if "attack" in labels else "fm"
    return [
        {**out, "kind": kind, "defense": labels["defense"], "seed": labels["seed"], **summarise(history), "run": run}
    ]


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
    return [
        {
            "seed": labels["seed"],
            "round": int(r["round"]),
            "centre_distance": float(r["defense_centre_distance"]),
            "run": run,
        }
        for _, r in history.iterrows()
        if r["round"] > 0
    ]


def _ablation_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .ablations import ABLATIONS, ablation_config

    a = ABLATIONS[str(labels["ablation"])]
    value = _match(labels["value"], {v: v for v in a.values}, f"ablation {a.name!r}")
    return ablation_config(profile, a, value, str(labels["defense"]), int(labels["seed"]))


def _ablation_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    from .ablations import ABLATIONS

    last = history.iloc[-1]
    return [
        {
            "ablation": labels["ablation"],
            "label": ABLATIONS[labels["ablation"]].label,
            "value": labels["value"],
            "defense": labels["defense"],
            "seed": labels["seed"],
            "acc": last["acc"],
            "asr": last["asr"],
            "run": run,
        }
    ]


def _calibration_config(profile: str, labels: dict, tables_dir: Path) -> Config:
    from .calibration import calibration_config

    return calibration_config(profile, str(labels["attack"]), str(labels["rung"]), int(labels["seed"]))


def _calibration_rows(labels: dict, history: pd.DataFrame, run: str) -> list[dict]:
    from .calibration import calibration_rows

    return calibration_rows(labels, history, run)


def _lazy(name: str, module: str = "calibrated"):
    """A function of ``paper_repro.studies.<module>``, imported when called."""

    def call(*args):
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(*args)

    return call


GRID_LABELS = ("defense", "attack", "partition", "seed")
HELDOUT_LABELS = ("setting", "attack", "defense", "seed")
FAMILIES: dict[str, Family] = {
    "grid": Family(
        GRID_LABELS,
        lambda p, lab, _: grid_config(p, lab["attack"], lab["defense"], lab["partition"], int(lab["seed"])),
        _summary_rows,
    ),
    "rounds": Family(
        GRID_LABELS,
        lambda p, lab, _: grid_config(p, lab["attack"], lab["defense"], lab["partition"], int(lab["seed"])),
        _round_rows,
    ),
    "heldout": Family(HELDOUT_LABELS, _heldout_config, _summary_rows),
    "attack_breadth": Family(("attack", "defense", "seed"), _attack_config, _attack_rows),
    "attack_strength": Family(("knob", "value", "defense", "seed"), _strength_config, _attack_rows),
    "mars_calibration": Family(("seed",), _mars_config, _mars_rows, "%.6g"),
    "ablations": Family(("ablation", "value", "defense", "seed"), _ablation_config, _ablation_rows),
    "attack_calibration": Family(("attack", "rung", "seed"), _calibration_config, _calibration_rows),
    "attack_calibrated": Family(
        ("attack", "rung", "verdict", "defense", "seed"), _lazy("calibrated_config"), _lazy("summary_rows")
    ),
    "attack_clients": Family(("study", "arm", "last_round", "seed"), _lazy("client_config"), _lazy("client_rows")),
    "defense_study": Family(
        ("batch", "hypothesis", "setting", "defense", "half", "seed"),
        _lazy("labels_config", "defense_study"),
        _lazy("summary_rows"),
    ),
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
        raise ValueError(
            f"{path.name} is not made of runs ({NOT_FROM_RUNS.get(kind, 'no study plans it')}): "
            "there is nothing to recompute through the ledger"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: a plan is read from a committed table's rows; known tables "
            f"of {profile}: {table_names(profile, base)}"
        )
    df = pd.read_csv(path)
    rows = df[list(fam.labels)].drop_duplicates()
    cells = []
    for labels in rows.to_dict("records"):
        labels = {k: (int(v) if k == "seed" else v) for k, v in labels.items()}
        try:
            cfg = fam.config(profile, labels, base)
        except KeyError as e:
            from ..tables import writer_command

            raise ValueError(
                f"{path.name} has a row the current code cannot plan ({labels}: no cell named {e}); the table "
                "predates a renamed or retired cell: remake it with "
                f"`{writer_command(kind, profile)}`"
            ) from e
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


def why_stale(rec: dict, root: Path = PACKAGE, now: dict | None = None) -> list[str]:
    """Why a record is not what the current code would make (empty: fresh): the files of its closure whose code
    changed, the libraries whose versions changed, and, given ``now`` (the cell's current run-code digest and
    synthetic-set key), a closure that changed without a recorded file changing (a registry entry, a new import, a
    module's role) or a synthetic set that would be drawn differently (FM checkpoint, shipped set, sampler)."""
    meta = _meta(rec)
    out = changed_files(meta.get("code_files") or {"(no per-file digests recorded)": ""}, root)
    libs = library_versions()
    out += [
        f"{lib} {v} → {libs.get(lib)}"
        for lib, v in (meta["hashes"].get("libraries") or {}).items()
        if libs.get(lib) != v
    ]
    if now and not out:
        if meta["hashes"].get("code") != now["code"]:
            out.append("the run's import closure")
        if (meta.get("inputs") or {}).get("synthetic_key", now["synthetic_key"]) != now["synthetic_key"]:
            out.append("the synthetic set's key")
    return out


def current_digests(cfg: Config, root: Path = PACKAGE, memo: dict | None = None) -> dict:
    """The run-code digest and synthetic-set key a run of ``cfg`` would get now (memoised per attack/defense and per
    FM section)."""
    from .. import attacks, defenses
    from ..codehash import run_code_digest
    from ..fm.synthetic import synthetic_key_hash

    memo = {} if memo is None else memo
    code_k, fm_k = ("code", cfg.attack.kind, cfg.defense.name), ("fm", json.dumps(cfg.to_dict()["fm"], sort_keys=True))
    if code_k not in memo:
        memo[code_k] = run_code_digest(
            attacks.REGISTRY.lookup(cfg.attack.kind), defenses.REGISTRY.lookup(cfg.defense.name), root=root
        )
    if fm_k not in memo:
        memo[fm_k] = synthetic_key_hash(cfg)
    return {"code": memo[code_k], "synthetic_key": memo[fm_k]}


@dataclass
class Status:
    """Per cell of a plan: its fresh record, or why its records are stale, or nothing (missing)."""

    plan: Plan
    fresh: dict[str, dict]
    stale: dict[str, list[str]]
    missing: list[Cell]

    def count(self, of: dict) -> int:
        """How many cells (not distinct runs: cells of one table may share a run) have their key in ``of``."""
        return sum(c.key in of for c in self.plan.cells)

    @property
    def complete(self) -> bool:
        return self.count(self.fresh) == len(self.plan.cells)

    def line(self) -> str:
        n = len(self.plan.cells)
        if self.complete:
            runs = len(self.fresh)
            return f"{self.plan.name}: fresh ({n} cells, {runs} runs in the ledger, made by the current code)"
        parts = []
        if self.stale:
            files = Counter(f for why in self.stale.values() for f in why)
            top = ", ".join(f for f, _ in files.most_common(4)) + (" ..." if len(files) > 4 else "")
            parts.append(f"{self.count(self.stale)} cells stale ({top} changed)")
        if self.missing:
            parts.append(f"{len(self.missing)} cells missing")
        return f"{self.plan.name}: {'; '.join(parts)} of {n} (fresh: {self.count(self.fresh)})"


def status(p: Plan, found: Found, root: Path = PACKAGE, memo: dict | None = None) -> Status:
    fresh, stale, missing = {}, {}, []
    memo = {} if memo is None else memo
    for cell in p.cells:
        recs = found.by_key.get(cell.key, [])
        now = current_digests(cell.config, root, memo) if recs else None
        whys = [why_stale(r, root, now) for r in recs]
        ok = [r for r, why in zip(recs, whys) if not why]
        if ok:
            fresh[cell.key] = ok[0]
        elif recs:
            stale[cell.key] = sorted({f for why in whys for f in why})
        else:
            missing.append(cell)
    return Status(p, fresh, stale, missing)
