"""Digests of the package's computing code and of the libraries it computes with: the part of a cache key that
says "made by this code". Docstrings and comments are stripped first, so editing documentation keeps every cache;
editing a line of code changes the digest of every result that code computes."""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata as md
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
NOT_COMPUTING = ("plots.py", "notebooks.py", "teaching.py", "__main__.py", "fm/__main__.py", "tables.py",
                 "codehash.py", "cliargs.py", "progress.py", "__init__.py")
"""Modules that only draw, orchestrate, read tables, hash code, check arguments, show progress or list lazy names:
they never change a number."""
LIBRARIES = ("torch", "numpy", "diffusers", "scikit-learn", "scipy")


def _strip(source: str) -> str:
    """The code of a module without docstrings and comments (``ast.unparse`` drops comments)."""
    tree = ast.parse(source)
    # docstrings of modules, classes and functions, and attribute docstrings (a string expression after a field):
    # every bare string statement is documentation, never code
    for node in ast.walk(tree):
        if hasattr(node, "body") and isinstance(node.body, list):
            node.body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                                        and isinstance(n.value.value, str))] or [ast.Pass()]
    return ast.unparse(tree)


def code_digest(parts: tuple[str, ...] | None = None, root: Path = PACKAGE) -> str:
    """16 hex digits over the stripped code of the package's computing modules (or of ``parts``: file or folder
    names relative to the package, e.g. ``("fm",)``), in path order."""
    return _digest(tuple(parts) if parts else None, str(root))


@functools.lru_cache(maxsize=None)
def _digest(parts: tuple[str, ...] | None, root: str) -> str:
    base = Path(root)
    files = sorted(base.rglob("*.py"))
    if parts:
        files = [f for f in files if any(str(f.relative_to(base)).startswith(p) for p in parts)]
    return _hash_files(base, [str(f.relative_to(base)) for f in files])


def _hash_files(base: Path, rels: list[str]) -> str:
    """16 hex digits over the stripped code of the files ``rels`` (relative to ``base``), non-computing ones
    left out."""
    h = hashlib.sha256()
    for rel in rels:
        if rel in NOT_COMPUTING:
            continue
        h.update(rel.encode())
        h.update(_strip((base / rel).read_text()).encode())
    return h.hexdigest()[:16]


REGISTRIES = ("attacks/__init__.py", "defenses/__init__.py")
"""Lists of every attack/defense: a run's code is its own attack's and defense's modules, not the whole list (adding
or editing another defense keeps its cached runs). What they also hold (``build``, ``get``, ``resolved_params``)
only looks up a class; a defense's resolved parameters are part of the run key themselves."""


def _module_file(name: str, base: Path) -> Path | None:
    """``paper_repro.a.b`` → ``<base>/a/b.py`` or ``<base>/a/b/__init__.py`` (None if neither exists)."""
    parts = name.split(".")[1:]
    for cand in (base.joinpath(*parts).with_suffix(".py") if parts else None,
                 base.joinpath(*parts, "__init__.py")):
        if cand is not None and cand.is_file():
            return cand
    return None


def _imports(path: Path, base: Path) -> set[Path]:
    """Files of the package that ``path`` imports anywhere (also inside functions), as paths."""
    rel = path.relative_to(base)
    pkg = ["paper_repro", *rel.parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "paper_repro"]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join([*pkg[: len(pkg) - node.level + 1], *([mod] if mod else [])])
            if mod.split(".")[0] != "paper_repro":
                continue
            names = [mod, *(f"{mod}.{a.name}" for a in node.names)]
        out |= {f for n in names if (f := _module_file(n, base)) is not None}
    return out


def import_closure(start: list[str], root: Path = PACKAGE) -> list[str]:
    """Package files (relative paths) reachable from ``start`` through imports, not entering the registries'
    ``__init__`` files; sorted."""
    base = Path(root)
    todo, seen = [base / s for s in start], set()
    while todo:
        f = todo.pop()
        rel = str(f.relative_to(base))
        if rel in seen or rel in REGISTRIES:
            continue
        seen.add(rel)
        todo.extend(_imports(f, base))
    return sorted(seen)


def run_code_digest(*classes: type, root: Path = PACKAGE) -> str:
    """16 hex digits over the stripped code a run executes: the import closure of the run path (``runner.py``) and of
    the modules defining ``classes`` (the run's defense and attack, with their base classes), registries and
    non-computing modules left out. Editing another defense's file keeps this run's digest."""
    base = Path(root)
    start = ["runner.py"]
    for cls in classes:
        for c in cls.__mro__:
            mod = getattr(c, "__module__", "")
            if mod.startswith("paper_repro.") and (f := _module_file(mod, base)) is not None:
                start.append(str(f.relative_to(base)))
    return _closure_digest(tuple(sorted(set(start))), str(base))


@functools.lru_cache(maxsize=None)
def _closure_digest(start: tuple[str, ...], root: str) -> str:
    base = Path(root)
    return _hash_files(base, import_closure(list(start), base))


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that compute results."""
    out = {}
    for lib in names:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            out[lib] = "missing"
    return out
