"""Command line (``python -m paper_repro --help``). Heavy imports happen after the arguments are parsed."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from .cliargs import (
    FAST_ON_SLOW_CPU,
    PROFILES,
    add_config_flags,
    check_unique,
    config_overrides,
    native_bf16,
    nonneg_int,
    pos_float,
    pos_int,
    writable_dir,
)
from .config import Config
from .store import REPO_ROOT

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

FIGURES = REPO_ROOT / "figures"
EXAMPLES = """examples:
  python -m paper_repro run --profile quick --attack fm --defense act_bound --seed 0
  python -m paper_repro main --profile quick              # no-defense runs + figures F1, F2
  python -m paper_repro grid --profile quick --seeds 0 1 2 --jobs 2
  python -m paper_repro results --profile quick          # every table the figure notebooks read
  python -m paper_repro figures                          # every figure from the committed tables
  python -m paper_repro check-tables                     # which tables the run ledger holds fresh
  python -m paper_repro recompute grid --budget 90 --jobs 2   # resumable; commit data/ledger afterwards
"""


def _parser(components: bool = True) -> argparse.ArgumentParser:
    """The command line; ``components=False`` leaves out ``run``'s flags made from the registries (importing them
    takes torch, seconds), for the commands that do not need them."""
    p = argparse.ArgumentParser(
        prog="python -m paper_repro",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reproducibility package (a reconstruction) for 'Securing Federated "
        "Learning against Backdoor Threats with Foundation Model Integration'.",
    )
    p.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
    sub = p.add_subparsers(dest="cmd", required=True)

    def profile(q):
        q.add_argument("--profile", default="quick", choices=PROFILES, help="preset (quick)")

    def jobs(q):
        q.add_argument(
            "--jobs",
            type=pos_int,
            default=1,
            help="runs side by side in worker processes; 2 is faster on 2 cores, equal up to float rounding",
        )
        q.add_argument(
            "--backend",
            default="local",
            choices=("local", "ray"),
            help="local worker processes, or one Ray task per run (needs the flower extra)",
        )
        q.add_argument("--address", default="", help="Ray head HOST:PORT or auto (default: start Ray here)")
        q.add_argument(
            "--fast",
            action="store_true",
            help="the fast mode: every run in bf16 (own run keys; tables go to data/tables/fast/ unless "
            "--tables-dir says otherwise; how far from fp32: docs/speed.md)",
        )

    r = sub.add_parser(
        "run",
        help="one experiment (served from its run folder if it already ran); every config field is a flag",
        allow_abbrev=False,
        usage="python -m paper_repro run [--profile P] [--attack A] [--defense D] [--seed N] [--SECTION.FIELD V ...]",
        epilog="every other config field and every attack/defense parameter is a flag of its own, e.g.\n"
        "  run --attack fm --defense act_bound --fl.num_rounds 5 --attack.fm_stages init --defense.params.epochs 3\n"
        "(a preset's values stay unless a flag is given; the components and their parameters: docs/components.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile(r)
    r.add_argument("--seed", type=nonneg_int, default=0, help="the one seed every random stream comes from (0)")
    r.add_argument("--partition", default=None, choices=("iid", "dirichlet", "shards"), help="data.partition")
    if components:
        from .catalog import KINDS, add_param_flags

        r.add_argument("--attack", default="none", choices=KINDS["attack"].names(), help="attack.kind (none)")
        r.add_argument("--defense", default="none", choices=KINDS["defense"].names(), help="defense.name (none)")
        add_config_flags(r, Config, skip=("profile", "seed", "data.partition", "attack.kind", "defense.name"))
        add_param_flags(r)
    cp = sub.add_parser("components", help="every attack and defense with its parameters, as Markdown")
    cp.add_argument("--out", default=None, help="write it here (docs/components.md) instead of printing it")
    m = sub.add_parser("main", help="the main job: no-defense runs and their figures F1, F2")
    profile(m)
    m.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0])
    m.add_argument("--out", default=str(FIGURES), help="folder for its figures and summary (default figures/)")
    g = sub.add_parser("grid", help="every defense × attack × {iid, dirichlet 0.5}: final ACC/ASR table (CSV)")
    profile(g)
    g.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0])
    g.add_argument("--defenses", nargs="+", default=None, help="defense names (default: all)")
    g.add_argument("--out", default=None, help="CSV path (default <results>/grid_<profile>.csv)")
    jobs(g)
    r2 = sub.add_parser("results", help="recompute every table the figure notebooks read (grid, ablations, F3, F1)")
    profile(r2)
    r2.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0])
    r2.add_argument("--defenses", nargs="+", default=None, help="defense names (default: all)")
    r2.add_argument("--tables-dir", default=None, help="where the tables go (default data/tables)")
    jobs(r2)
    h = sub.add_parser("heldout", help="defenses at their defaults on held-out seeds and settings (docs/protocol.md)")
    profile(h)
    h.add_argument("--seeds", type=nonneg_int, nargs="+", default=[10, 11, 12], help="held-out seeds (10 11 12)")
    h.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="random_patch sig target7 poison0.1 beta0.1 all_to_all validation (default: all but validation)",
    )
    h.add_argument(
        "--defenses",
        nargs="+",
        default=None,
        help="defense names or variant labels (default: none act_bound mm_bm pruning)",
    )
    h.add_argument("--table", default=None, help="table name (default heldout, or heldout_<attacks>)")
    h.add_argument(
        "--attacks",
        nargs="+",
        default=["fm"],
        help="attack names (default fm; none measures what a defense does to triggered images by itself)",
    )
    h.add_argument("--tables-dir", default=None, help="where heldout_<profile>.csv goes (default data/tables)")
    jobs(h)
    at = sub.add_parser("attacks", help="every attack against the main defenses, or the FM attack's strength sweep")
    profile(at)
    at.add_argument(
        "--study",
        default="breadth",
        choices=("breadth", "strength", "adaptive", "calibration", "calibrated", "clients"),
        help="breadth: attacks x defenses; strength: the FM attack's poison share and trigger strength; adaptive: "
        "the adaptive attacks against act_bound, from those two tables; calibration: each attack's ladder without "
        "defense, validation seeds; calibrated: each attack at its frozen rung, held-out seeds; clients: model "
        "replacement vs poisoning with and without fusion, Neurotoxin's durability (table attack_<study>_<profile>)",
    )
    at.add_argument(
        "--budget",
        type=pos_float,
        default=60.0,
        metavar="MINUTES",
        help="calibration, calibrated, clients: start no batch ending later (60); run again to continue",
    )
    at.add_argument(
        "--seeds",
        type=nonneg_int,
        nargs="+",
        default=None,
        help="seeds (breadth: 10 11 12; strength: 10; calibration: the validation seeds 0 1 2)",
    )
    at.add_argument("--attacks", nargs="+", default=None, help="breadth, calibration(s): attack labels (all)")
    at.add_argument(
        "--defenses",
        nargs="+",
        default=None,
        help="defense names (breadth: none median flame mars mm_bm act_bound; strength: none act_bound)",
    )
    at.add_argument("--tables-dir", default=None, help="where the table goes (default data/tables)")
    jobs(at)
    cm = sub.add_parser("calibrate-mars", help="MARS's epsilon from benign validation runs (docs/protocol.md)")
    profile(cm)
    cm.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0, 1, 2], help="validation seeds (0 1 2)")
    cm.add_argument(
        "--tables-dir", default=None, help="where mars_calibration_<profile>.csv goes (default data/tables)"
    )
    jobs(cm)
    c = sub.add_parser("check-tables", help="per committed table: fresh, N runs stale, or N cells missing (ledger)")
    profile(c)
    c.add_argument("--tables-dir", default=None, help="tables to check (default data/tables)")
    c.add_argument("--strict", action="store_true", help="exit with status 1 unless every run table is fresh")
    rc = sub.add_parser(
        "recompute",
        help="the missing and stale cells of committed tables into the run ledger, "
        "within a budget (resumable); then rebuild the complete tables",
    )
    profile(rc)
    rc.add_argument(
        "tables",
        nargs="*",
        metavar="TABLE",
        help="table kinds, e.g. grid heldout attack_breadth (default: every table made of runs)",
    )
    rc.add_argument(
        "--budget", type=pos_float, default=60.0, metavar="MINUTES", help="start no batch ending later (60)"
    )
    rc.add_argument("--jobs", type=pos_int, default=1, help="runs side by side (2 is faster on 2 cores)")
    rc.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="LABEL=VALUE",
        help="only the cells whose labels match, e.g. --where defense=none partition=iid seed=0",
    )
    rc.add_argument("--tables-dir", default=None, help="committed tables (default data/tables)")
    t = sub.add_parser("tables", help="export the grid and per-round tables from finished run folders (no runs)")
    profile(t)
    t.add_argument("--tables-dir", default=None, help="where the tables go (default data/tables)")
    for name, what in (
        ("figures", "the figure notebooks (from the tables) → figures/"),
        ("notebooks", "the numbered notebooks 01–05 through papermill"),
        ("report", "the numbered and figure notebooks, executed, as static HTML with an index"),
    ):
        f = sub.add_parser(name, help=what)
        profile(f)
        f.add_argument("--tables-dir", default=None, help="tables to read (default data/tables)")
        f.add_argument("--figures-dir", default=str(FIGURES), help="where figures go (default figures/)")
        f.add_argument("--out", default=None, help="folder for the executed copies (default build/notebooks)")
    return p


READS_TABLES = ("figures", "notebooks", "report", "check-tables")


def _known(parser: argparse.ArgumentParser, option: str, given: list[str], known: list[str]) -> None:
    unknown = [x for x in given if x not in known]
    if unknown:
        parser.error(f"{option}: unknown {unknown}; known: {' '.join(known)}")


def _validate(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Every argument checked before any work: a bad one ends the command with a one-line usage error."""
    check_unique(parser, "--seeds", getattr(a, "seeds", None))
    check_unique(parser, "--defenses", getattr(a, "defenses", None))
    if getattr(a, "attacks", None) and a.cmd == "attacks":
        from .studies.attacks import ATTACKS
        from .studies.calibration import LADDERS

        _known(parser, "--attacks", a.attacks, list(LADDERS if a.study in ("calibration", "calibrated") else ATTACKS))
    elif getattr(a, "attacks", None):
        from .attacks import names as attack_names

        _known(parser, "--attacks", a.attacks, attack_names())
    if getattr(a, "settings", None):
        from .studies.heldout import SETTINGS

        _known(parser, "--settings", a.settings, ["validation", *SETTINGS])
    if getattr(a, "defenses", None):
        from .defenses import names
        from .studies.heldout import DEFENSE_VARIANTS

        variants = a.cmd == "heldout" or (a.cmd == "attacks" and getattr(a, "study", None) == "calibrated")
        _known(
            parser,
            "--defenses",
            a.defenses,
            list(dict.fromkeys([*names(), *(DEFENSE_VARIANTS if variants else ())])),
        )
    if getattr(a, "table", None) and not re.fullmatch(r"heldout(_[a-z0-9]+)*", a.table):
        parser.error(f"--table {a.table}: a held-out table's name is heldout or heldout_<words> (a-z, 0-9)")
    if getattr(a, "tables_dir", None):
        if a.cmd in READS_TABLES and not Path(a.tables_dir).is_dir():
            parser.error(f"--tables-dir {a.tables_dir}: no such folder (the committed tables are in data/tables)")
        if a.cmd not in READS_TABLES and (why := writable_dir(a.tables_dir)):
            parser.error(f"--tables-dir: {why}")
    for opt in ("out", "figures_dir"):
        where = getattr(a, opt, None)
        a_file = opt == "out" and a.cmd in ("grid", "components")
        if where and a_file and Path(where).is_dir():
            parser.error(f"--out {where} is a folder; name the file to write (e.g. {Path(where) / 'out.csv'})")
        if where and (why := writable_dir(Path(where).parent if a_file else where)):
            parser.error(f"--{opt.replace('_', '-')}: {why}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(components="run" in argv)
    a = parser.parse_args(argv)
    _validate(parser, a)
    try:
        _run(a)
    except (ValueError, OSError, RuntimeError) as e:  # bad input, missing data, unwritable folder: one line
        if a.debug:
            raise
        raise SystemExit(f"error: {e}\n(run with --debug for the traceback)") from None


def _run(a: argparse.Namespace) -> None:
    if a.cmd in ("figures", "check-tables"):
        from .studies.recompute import check_tables

        lines = check_tables(a.profile, a.tables_dir)
        print("\n".join(lines), flush=True)
        if a.cmd == "check-tables":
            if a.strict and any(" fresh (" not in ln for ln in lines[1:] if "not made of runs" not in ln):
                raise SystemExit(1)
            return
    if a.cmd == "components":
        from .catalog import markdown

        if a.out:
            Path(a.out).write_text(markdown())
            print(f"written: {a.out}")
        else:
            print(markdown(), end="")
        return
    if a.cmd == "recompute":
        from .studies.recompute import recompute

        if bad := [w for w in a.where if "=" not in w]:
            raise ValueError(f"--where takes LABEL=VALUE pairs, got {bad} (e.g. --where defense=none seed=0)")
        summary = recompute(
            a.tables or None, a.profile, a.budget, a.jobs, a.tables_dir, where=dict(w.split("=", 1) for w in a.where)
        )
        print(json.dumps(summary, indent=1))
        return
    from .options import RunOptions

    # the commands that write committed tables record their runs in the ledger, which those tables are rebuilt from
    opts = RunOptions.for_profile(
        a.profile,
        **({"jobs": a.jobs, "backend": a.backend, "address": a.address, "fast": a.fast} if "jobs" in a else {}),
        ledger=a.cmd in ("results", "heldout", "attacks", "calibrate-mars"),
    )
    if getattr(a, "fast", False) and "tables_dir" in a and a.tables_dir is None:
        from .tables import TABLES_DIR

        a.tables_dir = str(TABLES_DIR / "fast")  # the fp32 reference tables are never overwritten by fast ones
    if getattr(a, "fast", False) and opts.device == "cpu" and native_bf16() is False:
        print(FAST_ON_SLOW_CPU, file=sys.stderr)
    if a.cmd in ("figures", "notebooks", "report"):
        from . import notebooks
        from .tables import TABLES_DIR

        paths = {
            "figures": notebooks.figure_notebooks(),
            "notebooks": notebooks.numbered_notebooks(),
            "report": notebooks.numbered_notebooks() + notebooks.figure_notebooks(),
        }[a.cmd]
        out = Path(a.out or notebooks.BUILD_DIR / a.cmd)
        t0 = time.perf_counter()
        done = notebooks.run_notebooks(
            paths,
            out,
            profile=a.profile,
            tables_dir=str(a.tables_dir or TABLES_DIR),
            figures_dir=str(Path(a.figures_dir).resolve()),
        )
        summary = {"notebooks": done, "seconds": round(time.perf_counter() - t0, 1), "executed": str(out)}
        if a.cmd == "report":
            summary["report"] = str(notebooks.render_report([out / p.name for p in paths], out / "html"))
        print(json.dumps(summary, indent=2))
    elif a.cmd == "results":
        from .studies.compute import compute_tables

        print(
            json.dumps(
                compute_tables(a.profile, tuple(a.seeds), a.defenses, tables_dir=a.tables_dir, options=opts), indent=2
            )
        )
    elif a.cmd == "heldout":
        from .studies.heldout import DEFENSES, SETTINGS, heldout_study, heldout_summary

        df = heldout_study(
            a.profile,
            tuple(a.settings or SETTINGS),
            tuple(a.defenses or DEFENSES),
            tuple(a.seeds),
            tuple(a.attacks),
            tables_dir=a.tables_dir,
            options=opts,
            table=a.table or ("heldout" if a.attacks == ["fm"] else "heldout_" + "_".join(a.attacks)),
        )
        cols = ["setting", "attack", "defense", "n", "acc_mean", "acc_lo", "acc_hi", "asr_mean", "asr_lo", "asr_hi"]
        print(heldout_summary(df)[cols].round(3).to_string(index=False))
    elif a.cmd == "attacks":
        from .studies.attacks import run_study

        print(run_study(a.study, a.profile, a.attacks, a.defenses, a.seeds, a.budget, a.tables_dir, opts))
    elif a.cmd == "calibrate-mars":
        from .studies.heldout import calibrate_mars

        eps, df = calibrate_mars(a.profile, tuple(a.seeds), tables_dir=a.tables_dir, options=opts)
        print(df.groupby("seed")["centre_distance"].describe().round(4).to_string())
        print(f"epsilon = {eps:.4g} (largest benign cluster distance)")
    elif a.cmd == "tables":
        from .studies.compute import export_tables

        print("\n".join(str(p) for p in export_tables(a.profile, tables_dir=a.tables_dir)))
    elif a.cmd == "grid":
        from .studies.grid import run_grid

        df = run_grid(a.profile, a.defenses, seeds=tuple(a.seeds), out_csv=a.out, options=opts)
        cols = ["acc", "asr", "tpr", "fpr", "overhead"]
        print(df.groupby(["partition", "attack", "defense"])[cols].mean().round(3).to_string())
    elif a.cmd == "run":
        from .profiles import load_config
        from .runner import run_experiment

        over = config_overrides(a)
        over.setdefault("attack", {})["kind"] = a.attack
        over.setdefault("defense", {})["name"] = a.defense
        if a.partition:
            over.setdefault("data", {})["partition"] = a.partition
        over["seed"] = a.seed
        cfg = load_config(a.profile, **over)
        res = run_experiment(cfg, options=opts)
        print(res.history.to_string(index=False))
        print(f"{'cached' if res.cached else 'saved'}: {res.run_dir}")
    else:
        from .studies.main_job import main_job

        print(json.dumps(main_job(a.profile, a.seeds, Path(a.out)), indent=2))


if __name__ == "__main__":
    main()
