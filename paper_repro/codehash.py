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
NOT_COMPUTING = ("plots.py", "notebooks.py", "__main__.py", "fm/__main__.py", "tables.py")
"""Modules that only draw, orchestrate or read tables: they never change a number."""
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
    h = hashlib.sha256()
    for f in files:
        rel = str(f.relative_to(base))
        if rel in NOT_COMPUTING:
            continue
        h.update(rel.encode())
        h.update(_strip(f.read_text()).encode())
    return h.hexdigest()[:16]


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that compute results."""
    out = {}
    for lib in names:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            out[lib] = "missing"
    return out
