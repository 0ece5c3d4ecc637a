"""What made a figure, written into the figure itself: the digest of the committed tables it read, of the plotting
code (``plots``, ``tables`` and what they import) and of the notebook that drew it (its code cells and the package
modules it imports). A PNG carries it as a text chunk (``paper_repro``), a PDF in its Subject field;
:func:`expected` recomputes it from the current files, so a test can tell a committed figure that ``make figures``
would draw differently now. Torch-free."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .store import REPO_ROOT

DIGEST_ROLE = "bookkeeping"  # codehash: see its module docstring

KEY = "paper_repro"
NOTEBOOK_ENV = "PAPER_REPRO_NOTEBOOK"
"""Set by :func:`paper_repro.notebooks.run_notebooks` to the notebook it executes (the kernel inherits it)."""
_READ: list[Path] = []
"""Tables this process has opened through :func:`paper_repro.tables.table_path` (in order; the sources of every
figure drawn after them: over-inclusive, never short)."""


def note_source(path: Path) -> None:
    path = Path(path).resolve()
    if path not in _READ:
        _READ.append(path)


def _rel(p: Path, root: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _notebook_code(nb: Path) -> tuple[str, list[str]]:
    """(digest of the code cells, package modules they import) of a notebook."""
    import ast

    cells = [
        ("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
        for c in json.loads(nb.read_text())["cells"]
        if c["cell_type"] == "code"
    ]
    mods = set()
    for cell in cells:
        try:  # IPython magics and shell lines are not Python
            tree = ast.parse("\n".join(ln for ln in cell.splitlines() if not ln.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods |= {a.name for a in node.names if a.name.split(".")[0] == "paper_repro"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "paper_repro":
                mods |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return _sha("\n".join(cells).encode()), sorted(mods)


def _code(modules: list[str], root: Path) -> dict[str, str]:
    """Digests of the plotting code: the closure of ``plots`` and ``tables``, and the notebook's own package modules
    (not their closures: a run-code edit stales the tables, which stale the figure)."""
    from .codehash import _info, _module_file, import_closure

    pkg = root / "paper_repro"
    files = set(import_closure(["plots.py", "tables.py"], pkg))
    for m in modules:
        f = _module_file(m, pkg)
        if f is not None:
            files.add(str(f.relative_to(pkg)))
    return {rel: _sha(_info(pkg / rel)[1].encode()) for rel in sorted(files) if _info(pkg / rel)[0] != "bookkeeping"}


def make(notebook: str | Path | None, sources: list[Path], root: Path = REPO_ROOT) -> dict:
    """The stamp of a figure drawn by ``notebook`` from ``sources`` (paths of tables)."""
    root = Path(root).resolve()
    nb_digest, mods = _notebook_code(Path(notebook)) if notebook else (None, [])
    stamp = {
        "notebook": _rel(notebook, root) if notebook else None,
        "notebook_code": nb_digest,
        "tables": {_rel(p, root): _sha(Path(p).read_bytes()) for p in sources if Path(p).is_file()},
        "code": _code(mods, root),
    }
    stamp["digest"] = _sha(json.dumps(stamp, sort_keys=True).encode())
    return stamp


def current() -> dict:
    """The stamp for a figure drawn now, in this process."""
    return make(os.environ.get(NOTEBOOK_ENV) or None, list(_READ))


def expected(stamp: dict, root: Path = REPO_ROOT) -> dict:
    """The stamp that the recorded notebook and tables of ``stamp`` would give now."""
    root = Path(root).resolve()
    nb = root / stamp["notebook"] if stamp.get("notebook") else None
    return make(nb, [root / t for t in stamp.get("tables", {})], root)


def read(path: str | Path) -> dict | None:
    """The stamp written into a PNG (None if it has none)."""
    from PIL import Image

    with Image.open(path) as im:
        text = getattr(im, "text", {}) or {}
    return json.loads(text[KEY]) if KEY in text else None


def metadata(fmt: str, stamp: dict) -> dict:
    """The ``metadata=`` argument of ``Figure.savefig`` that writes ``stamp`` into a file of format ``fmt``."""
    if fmt == "png":
        return {KEY: json.dumps(stamp, sort_keys=True)}
    if fmt == "pdf":
        return {"Subject": json.dumps(stamp, sort_keys=True)}
    return {}
