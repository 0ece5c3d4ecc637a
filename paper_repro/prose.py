"""Numbers in prose come from the committed tables, never from a hand: two kinds of mark in the Markdown of README,
``docs/`` and the notebooks' Markdown cells, checked against ``data/tables`` and rewritten from them.

* **A cell**: a number followed by an HTML comment (invisible once rendered) that names where it comes from::

      ASR 0.935<!-- cell attack_calibration: attack=FM patch; rung=share 0.2 :: asr mean -->

  ``TABLE[@PROFILE]: col=value; col=value :: COLUMN [AGG] [x100] [below col=value; ...]``: the rows of the table
  (profile ``quick`` unless named) whose columns equal the values (text, or numbers compared as numbers), one column,
  an aggregate (:data:`AGGREGATES`; ``one``, the default, wants exactly one row; ``lo``/``hi`` the tables'
  95 % seed interval, Student-t clipped to [0, 1]) and ``x100`` for percent or points;
  ``below`` gives how far the number lies below the same rows with those columns changed (an ACC cost against no
  defense: ``:: acc mean x100 below defense=none``). The written number's decimals are the precision compared
  (``0.94`` against 0.9351 holds; ``0.936`` does not).
* **A value of a committed JSON file** (a benchmark's results) or **a constant of the code** (a pre-registered
  threshold), with the same number-then-comment form::

      0.43<!-- json benchmarks/results/speed_cpu.json :: engines_seconds_per_round.threads_bf16 -->
      2.08<!-- json benchmarks/results/speed_cpu.json :: ratios."loop / ours(threads_bf16)" -->
      151<!-- json benchmarks/results/speed_cpu.json :: achieved_fraction_of_peak.threads_bf16 x100 -->
      6.40<!-- json F.json :: a.seconds / b.seconds -->   (a ratio of two values of one file)
      0.80<!-- const paper_repro.studies.claims:WORKS -->

  The JSON path is relative to the repository root; after ``::`` (json) or ``:`` (const) comes a dotted key path
  (``"a key.with dots"`` quoted; list items by number), optionally ``/`` a second path (the ratio of the two), and
  ``x100`` for percent.
* **A generated block**: Markdown that a function draws from the tables, between two comments::

      <!-- BEGIN generated: calibration -->
      ...
      <!-- END generated -->

  The name is a key of :data:`BLOCKS` (module and function; the function takes the profile and the tables folder
  and returns Markdown).

``python -m paper_repro.prose`` lists every mark whose text is not what its table says (exit 1 when one is);
``--write`` rewrites those numbers and blocks from the tables; ``--unmarked`` also counts the decimal numbers that no
mark covers, per file (the ones still typed by hand)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .marks import ROOT, MarkError, const_value, json_value
from .stats import t_interval
from .tables import ok_rows, read_table

DOCUMENTS = ("README.md", "docs/*.md", "notebooks/*.ipynb")
"""Where marks are looked for (globs relative to the repository root)."""

KINDS = ("cell", "json", "const")
"""The kinds of number mark: a table's cell, a value of a committed JSON file, a constant of the code."""
CELL = re.compile(
    r"(?<![\w.,+\-])(?P<value>-?\d+(?:\.\d+)?)<!--\s*(?P<kind>" + "|".join(KINDS) + r")\s+(?P<spec>.*?)\s*-->", re.S
)
"""A number right before its mark, not the tail of a longer token (``1,234.5``, ``v1.0.94``, ``0.3-0.5``, ``1e-3``)."""
ANY_CELL = re.compile(r"<!--\s*(?:" + "|".join(KINDS) + r")\s")
BLOCK = re.compile(
    r"(?P<open><!--\s*BEGIN generated:\s*(?P<name>[\w-]+)\s*-->[ \t]*\r?\n)"
    r"(?P<body>(?:(?!<!--\s*BEGIN generated).)*?)(?P<close><!--\s*END generated\s*-->)",
    re.S,
)
ANY_BLOCK = re.compile(r"<!--\s*BEGIN generated")
AGGREGATES = {
    "one": None,
    "mean": np.mean,
    "median": np.median,
    "min": np.min,
    "max": np.max,
    "std": lambda v: np.std(v, ddof=1),
    "n": len,
    "lo": lambda v: t_interval(v)[0],
    "hi": lambda v: t_interval(v)[1],
}
"""How the selected rows' values become one number (``one``: exactly one row, its value)."""

BLOCKS = {
    "calibration": "paper_repro.studies.calibrated:calibration_markdown",
    "clients": "paper_repro.studies.calibrated:clients_markdown",
    "claims": "paper_repro.studies.claims:claims_markdown",
    "heldout": "paper_repro.studies.heldout:heldout_markdown",
    "breadth": "paper_repro.studies.calibrated:breadth_markdown",
    "grid": "paper_repro.studies.grid:grid_markdown",
    "defense_study": "paper_repro.studies.defense_study:study_markdown",
}
"""Generated blocks: name → ``module:function(profile, tables_dir) -> str``."""


@dataclass(frozen=True)
class Cell:
    table: str
    profile: str
    where: tuple[tuple[str, str], ...]
    column: str
    aggregate: str
    scale: float
    below: tuple[tuple[str, str], ...] = ()
    seeds: tuple[int, ...] = ()


def parse_cell(spec: str) -> Cell:
    """``TABLE[@PROFILE]: col=value; ... :: COLUMN [AGG] [x100]`` → :class:`Cell` (see the module docstring). The
    column follows ``::``, not ``|``: a pipe would split a Markdown table's cell even inside a comment."""
    head, bar, tail = spec.partition("::")
    if not bar:
        raise MarkError(f"cell mark {spec!r} has no ':: COLUMN': write 'TABLE: col=value :: COLUMN [AGG] [x100]'")
    name, _, filters = head.partition(":")
    table, _, profile = name.strip().partition("@")
    tail, below = (re.split(r"\s+below\s+", tail, maxsplit=1) + [""])[:2]
    where, base = _filters(spec, filters), _filters(spec, below)
    words = tail.split()
    if not words:
        raise MarkError(f"cell mark {spec!r} names no column after '::'")
    scale = 100.0 if "x100" in words[1:] else 1.0
    rest = [w for w in words[1:] if w != "x100"]
    aggregate = rest[0] if rest else "one"
    if aggregate not in AGGREGATES or len(rest) > 1:
        raise MarkError(f"cell mark {spec!r}: {' '.join(rest)!r} is not one of {', '.join(AGGREGATES)} (or x100)")
    if not table:
        raise MarkError(f"cell mark {spec!r} names no table before ':'")
    return Cell(table, profile or "quick", where, words[0], aggregate, scale, base)


def _filters(spec: str, text: str) -> tuple[tuple[str, str], ...]:
    where = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        col, eq, value = part.partition("=")
        if not eq:
            raise MarkError(f"cell mark {spec!r}: filter {part!r} is not 'column=value'")
        where.append((col.strip(), value.strip()))
    return tuple(where)


def _matches(series: pd.Series, value: str) -> pd.Series:
    try:
        number = float(value)
    except ValueError:
        return series.astype(str) == value
    as_number = pd.to_numeric(series, errors="coerce")
    return (as_number == number) | (series.astype(str) == value)


def cell_value(cell: Cell, tables_dir=None, cache: dict | None = None) -> float:
    """The number a cell mark names, from the committed table."""
    cache = {} if cache is None else cache
    if cell.below:
        # paired: both sides over the seeds they share (an ACC cost against no defense on the same seeds)
        base = replace(cell, where=tuple({**dict(cell.where), **dict(cell.below)}.items()), below=())
        mine = replace(cell, below=())
        seeds = set(_rows(mine, tables_dir, cache).get("seed", [])) & set(
            _rows(base, tables_dir, cache).get("seed", [])
        )
        if seeds:
            base, mine = (replace(c, seeds=tuple(sorted(seeds))) for c in (base, mine))
        return cell_value(base, tables_dir, cache) - cell_value(mine, tables_dir, cache)
    rows = _rows(cell, tables_dir, cache)
    df = cache[(cell.table, cell.profile)]
    if cell.column not in df:
        raise MarkError(f"table {cell.table} has no column {cell.column!r} (it has {', '.join(df.columns)})")
    values = rows[cell.column].dropna().astype(float).to_numpy()
    if len(rows) and cell.aggregate == "n":
        return float(len(rows))
    if len(values) == 0:
        raise MarkError(f"no row of {cell.table} has {dict(cell.where)} with a value of {cell.column!r}")
    if cell.aggregate == "one":
        if len(values) != 1:
            raise MarkError(
                f"{len(values)} rows of {cell.table} match {dict(cell.where)}: name more columns or an aggregate"
            )
        return float(values[0]) * cell.scale
    value = float(AGGREGATES[cell.aggregate](values)) * cell.scale
    if not np.isfinite(value):
        raise MarkError(f"{cell.aggregate} of {cell.column!r} over {len(values)} rows of {cell.table} is {value}")
    return value


def mark_value(kind: str, spec: str, tables_dir=None, cache: dict | None = None) -> float:
    """The number a mark of ``kind`` (:data:`KINDS`) names."""
    cache = {} if cache is None else cache
    if kind == "json":
        return json_value(spec, cache)
    if kind == "const":
        return const_value(spec)
    return cell_value(parse_cell(spec), tables_dir, cache)


def _rows(cell: Cell, tables_dir, cache: dict) -> pd.DataFrame:
    """The rows a cell names (runs that diverged left out, as the tables' summaries do)."""
    key = (cell.table, cell.profile)
    if key not in cache:
        cache[key] = ok_rows(read_table(cell.table, cell.profile, tables_dir))
    df = rows = cache[key]
    for col, value in cell.where:
        if col not in df:
            raise MarkError(f"table {cell.table} has no column {col!r} (it has {', '.join(df.columns)})")
        rows = rows[_matches(rows[col], value)]
    if cell.seeds:
        rows = rows[rows["seed"].isin(cell.seeds)]
    return rows


def formatted(value: float, written: str) -> str:
    """``value`` with as many decimals as ``written`` has, rounded half up as a person writes it (0.125 → 0.13),
    and no ``-0``."""
    from decimal import ROUND_HALF_UP, Decimal

    decimals = len(written.partition(".")[2])
    text = str(Decimal(repr(round(value, 12))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
    return text[1:] if re.fullmatch(r"-0\.?0*", text) else text


@dataclass
class Problem:
    path: str
    line: int
    written: str
    expected: str
    what: str

    def __str__(self) -> str:
        if self.what.startswith("block"):
            return f"{self.path}:{self.line}: {self.what}"
        return f"{self.path}:{self.line}: {self.what}: written {self.written!r}, the tables say {self.expected!r}"


def render_block(name: str, profile: str = "quick", tables_dir=None) -> str:
    if name not in BLOCKS:
        raise MarkError(f"no generated block {name!r}: known are {', '.join(BLOCKS)} (paper_repro.prose.BLOCKS)")
    module, _, func = BLOCKS[name].partition(":")
    text = getattr(importlib.import_module(module), func)(profile, tables_dir)
    return text.rstrip("\n") + "\n"


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def fix_text(text: str, path: str = "<text>", tables_dir=None) -> tuple[str, list[Problem]]:
    """The text with every marked number and block as the tables say, and the problems found (what was wrong)."""
    problems: list[Problem] = []
    cache: dict = {}

    def block(m: re.Match) -> str:
        try:
            body = render_block(m["name"], tables_dir=tables_dir)
        except (FileNotFoundError, ValueError) as e:
            raise MarkError(f"{path}:{_line(text, m.start())}: block {m['name']!r}: {e}") from None
        if body != m["body"]:
            problems.append(
                Problem(path, _line(text, m.start()), "…", "…", f"block {m['name']!r} is not what its tables draw")
            )
        return m["open"] + body + m["close"]

    blocks = list(BLOCK.finditer(text))
    for where, pattern, what in ((blocks, ANY_BLOCK, "BEGIN generated"), (None, ANY_CELL, "cell")):
        taken = (
            {m.start() for m in where}
            if where is not None
            else {m.start() + m.group(0).index("<!--") for m in CELL.finditer(text)}
        )
        for m in pattern.finditer(text):
            if m.start() not in taken:
                hint = (
                    "it has no END generated of its own"
                    if what == "BEGIN generated"
                    else "no number stands right before it (no space between)"
                )
                kind = what if what == "BEGIN generated" else m.group(0)[4:].split()[0]
                raise MarkError(f"{path}:{_line(text, m.start())}: a {kind} mark that is not read: {hint}")

    def cell(m: re.Match) -> str:
        if any(b.start() <= m.start() < b.end() for b in blocks):
            return m.group(0)  # a generated block's text is the block's, not a mark's
        try:
            value = mark_value(m["kind"], m["spec"], tables_dir, cache)
        except (MarkError, FileNotFoundError, ValueError) as e:
            raise MarkError(f"{path}:{_line(text, m.start())}: {e}") from None
        want = formatted(value, m["value"])
        if want != m["value"]:
            problems.append(Problem(path, _line(text, m.start()), m["value"], want, "number"))
        return want + m.group(0)[len(m["value"]) :]

    out = CELL.sub(cell, text)  # cells first: a number's rewrite never changes the line count
    return BLOCK.sub(block, out), problems


def _markdown_of(path: Path) -> list[str]:
    if path.suffix != ".ipynb":
        return [path.read_text()]
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb.get("cells", []) if c.get("cell_type") == "markdown"]


def documents(root: Path = ROOT) -> list[Path]:
    return sorted({p for g in DOCUMENTS for p in root.glob(g)})


def check(paths=None, tables_dir=None, root: Path = ROOT) -> list[Problem]:
    """Every mark of ``paths`` (default :func:`documents`) whose text differs from its tables."""
    problems = []
    for p in paths or documents(root):
        rel = str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p)
        texts = _markdown_of(Path(p))
        for i, text in enumerate(texts):
            where = f"{rel} (Markdown cell {i + 1})" if Path(p).suffix == ".ipynb" else rel
            problems += fix_text(text, where, tables_dir)[1]
    return problems


def write(paths=None, tables_dir=None, root: Path = ROOT) -> list[Problem]:
    """Rewrite the marks of the Markdown files among ``paths`` from the tables (notebooks are only checked: their
    Markdown cells are edited in the notebook); returns what was changed or is still wrong."""
    problems = []
    for p in paths or documents(root):
        p = Path(p)
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        if p.suffix == ".ipynb":
            problems += check([p], tables_dir, root)
            continue
        with p.open(newline="") as f:
            new, found = fix_text(f.read(), rel, tables_dir)
        if found:
            with p.open("w", newline="") as f:
                f.write(new)
        problems += found
    return problems


NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?!\.?\w)")
UNCOUNTED = re.compile(r"`[^`\n]*`|<!--.*?-->|\[[^\]]*\]\([^)]*\)", re.S)


def unmarked(text: str) -> int:
    """Decimal numbers no mark covers: outside generated blocks, code spans, links and comments, and not followed by
    a cell mark."""
    text = BLOCK.sub("", text)
    text = CELL.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return len(NUMBER.findall(UNCOUNTED.sub("", text)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paper_repro.prose", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path, help="files (default: README.md, docs/*.md, notebooks)")
    ap.add_argument("--write", action="store_true", help="rewrite marked numbers and blocks from the tables")
    ap.add_argument("--unmarked", action="store_true", help="count the decimal numbers no mark covers, per file")
    ap.add_argument("--tables-dir", type=Path, default=None, help="tables folder (default data/tables)")
    a = ap.parse_args(argv)
    paths = [p.resolve() for p in a.paths] or None
    try:
        problems = (write if a.write else check)(paths, a.tables_dir)
    except (MarkError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kept = [p for p in problems if not a.write or ".ipynb" in p.path]  # notebooks are only checked
    for p in problems:
        print(("rewrote " if a.write and p not in kept else "") + str(p))
    if a.write and kept:
        print(f"{len(kept)} marks in notebooks left as they are: edit those Markdown cells by hand")
    if a.unmarked:
        for p in paths or documents():
            n = sum(unmarked(t) for t in _markdown_of(p))
            print(f"{n:5d} unmarked numbers  {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
    if not problems:
        print("every marked number and block is what the tables say")
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())
