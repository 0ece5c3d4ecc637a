"""Digests of the package's computing code and of the libraries it computes with: the part of a cache key that
says "made by this code". A digest covers the import closure of where a computation starts (the modules that define
it and every package module they import, also inside functions), never a hand-written list of files. Docstrings and
comments are stripped first, so editing documentation keeps every cache; editing a line of code changes the digest of
every result whose closure holds that line.

A module says what it is to the digests with a top-level ``DIGEST_ROLE`` string (read from its source, never
imported): ``"not computing"`` (it draws, orchestrates, shows progress or checks arguments: its imports are followed,
its own code is not hashed), ``"bookkeeping"`` (paths, hashing, stamps: neither hashed nor followed, by any digest,
figures' included) or ``"registry"`` (a list of every attack/defense: not entered, so that adding or editing another
defense keeps this run's digest; a run's own attack and defense are start points of its closure)."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata as md
import inspect
from pathlib import Path

DIGEST_ROLE = "bookkeeping"

PACKAGE = Path(__file__).resolve().parent
LIBRARIES = ("torch", "numpy", "diffusers", "scikit-learn", "scipy")
RUN_ENTRY = "runner.py"
"""Where every run starts (:func:`paper_repro.runner.run_experiment`); a run's closure is this module's plus that of
its attack's and defense's modules."""


def _strip(source: str) -> str:
    """The code of a module without docstrings and comments (``ast.unparse`` drops comments)."""
    tree = ast.parse(source)
    # docstrings of modules, classes and functions, and attribute docstrings (a string expression after a field):
    # every bare string statement is documentation, never code
    for node in ast.walk(tree):
        if hasattr(node, "body") and isinstance(node.body, list):
            node.body = [
                n
                for n in node.body
                if not (
                    isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                )
            ] or [ast.Pass()]
    return ast.unparse(tree)


@functools.lru_cache(maxsize=None)
def _parsed(source: str) -> tuple[str, str, tuple[tuple[str, int, tuple[str, ...]], ...]]:
    """(role, stripped code, imports) of a module's source (cached by the source itself, so an edited file is parsed
    again). Imports: (module, level, names) of every import outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(source)
    role = "computing"
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and getattr(node.targets[0], "id", "") == "DIGEST_ROLE"
            and isinstance(node.value, ast.Constant)
        ):
            role = str(node.value.value)
    imports = []
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)  # annotations only: never executed
            continue
        if isinstance(node, ast.Import):
            imports += [(a.name, 0, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.module or "", node.level, tuple(a.name for a in node.names)))
        todo.extend(ast.iter_child_nodes(node))
    return role, _strip(source), tuple(imports)


def _info(path: Path):
    return _parsed(Path(path).read_text())


def _module_file(name: str, base: Path) -> Path | None:
    """``paper_repro.a.b`` → ``<base>/a/b.py`` or ``<base>/a/b/__init__.py`` (None if neither exists)."""
    parts = name.split(".")[1:]
    for cand in (base.joinpath(*parts).with_suffix(".py") if parts else None, base.joinpath(*parts, "__init__.py")):
        if cand is not None and cand.is_file():
            return cand
    return None


def _imports(path: Path, base: Path) -> set[Path]:
    """Files of the package that ``path`` imports (also inside functions; not under ``if TYPE_CHECKING:``)."""
    pkg = ["paper_repro", *path.relative_to(base).parent.parts]
    out = set()
    for mod, level, names in _info(path)[2]:
        if level:
            mod = ".".join([*pkg[: len(pkg) - level + 1], *([mod] if mod else [])])
        if mod.split(".")[0] != "paper_repro":
            continue
        cands = [mod, *(f"{mod}.{n}" for n in names)]
        out |= {f for n in cands if (f := _module_file(n, base)) is not None}
    return out


def import_closure(start: list[str], root: Path = PACKAGE) -> list[str]:
    """Package files (relative paths) reachable from ``start`` through imports, registries not entered; sorted."""
    base = Path(root)
    todo, seen = [base / s for s in start], set()
    while todo:
        f = todo.pop()
        rel = str(f.relative_to(base))
        if rel in seen or _info(f)[0] == "registry":
            continue
        seen.add(rel)
        if _info(f)[0] == "bookkeeping":
            continue
        todo.extend(_imports(f, base))
    return sorted(seen)


def start_files(*objects, root: Path = PACKAGE) -> list[str]:
    """Relative paths of the package modules that define ``objects`` (functions, classes with their base classes,
    modules) or that ``objects`` name directly (strings such as ``"runner.py"``)."""
    base, out = Path(root), set()
    for obj in objects:
        if isinstance(obj, str):
            out.add(obj)
            continue
        for c in obj.__mro__ if inspect.isclass(obj) else (obj,):
            mod = c.__name__ if inspect.ismodule(c) else getattr(c, "__module__", "")
            if mod.startswith("paper_repro.") and (f := _module_file(mod, base)) is not None:
                out.add(str(f.relative_to(base)))
    return sorted(out)


def code_files(*objects, root: Path = PACKAGE) -> dict[str, str]:
    """12 hex digits of the stripped code of every computing file in the closure of ``objects`` (see
    :func:`start_files`), by relative path: what a run record keeps so that staleness can name the files that
    changed."""
    base = Path(root)
    out = {}
    for rel in import_closure(start_files(*objects, root=base), base):
        role, code, _ = _info(base / rel)
        if role == "computing":
            out[rel] = hashlib.sha256(code.encode()).hexdigest()[:12]
    return out


def code_digest_of(*objects, root: Path = PACKAGE) -> str:
    """16 hex digits over the stripped code of the closure of ``objects`` (computing modules only)."""
    h = hashlib.sha256()
    for rel, d in code_files(*objects, root=root).items():
        h.update(f"{rel}:{d};".encode())
    return h.hexdigest()[:16]


def run_code_digest(*classes: type, root: Path = PACKAGE) -> str:
    """The digest of the code a run executes: the closure of the run path (:data:`RUN_ENTRY`) and of the modules
    defining ``classes`` (the run's attack and defense, with their base classes). Editing another defense's file
    keeps this run's digest."""
    return code_digest_of(RUN_ENTRY, *classes, root=root)


def run_code_files(*classes: type, root: Path = PACKAGE) -> dict[str, str]:
    """Per-file digests of the same closure as :func:`run_code_digest`."""
    return code_files(RUN_ENTRY, *classes, root=root)


def changed_files(recorded: dict[str, str], root: Path = PACKAGE) -> list[str]:
    """The files of a recorded closure (:func:`code_files`) whose code differs now, or that no longer exist."""
    base, out = Path(root), []
    for rel, d in sorted(recorded.items()):
        p = base / rel
        if not p.is_file() or hashlib.sha256(_info(p)[1].encode()).hexdigest()[:12] != d:
            out.append(rel)
    return out


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that compute results."""
    out = {}
    for lib in names:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            out[lib] = "missing"
    return out
