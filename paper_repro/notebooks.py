"""The papermill batch: run numbered notebooks and figure notebooks with parameters, executed copies to a build
folder (the committed notebooks stay output-free)."""

from __future__ import annotations

import html
import os
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from .figstamp import NOTEBOOK_ENV
from .store import REPO_ROOT

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_NB_DIR = NOTEBOOKS_DIR / "figures"
BUILD_DIR = REPO_ROOT / "build" / "notebooks"


def numbered_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def figure_notebooks() -> list[Path]:
    return sorted(FIGURES_NB_DIR.glob("*.ipynb"))


def run_notebooks(
    paths: list[Path], out_dir: str | Path = BUILD_DIR, progress: bool = True, **parameters
) -> list[dict]:
    """Execute each notebook with the ``parameters`` it declares in its ``parameters`` cell (others are not
    injected); raise on the first failing one, naming the executed copy to open. Returns name/seconds per notebook."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with environ({"PAPER_REPRO_PROGRESS": "text"}):  # the kernels inherit it: text bars in the executed copies
        return _execute(paths, out_dir, progress, parameters)


@contextmanager
def environ(values: dict[str, str]):
    """``os.environ`` with ``values`` set while the block runs (the kernels it starts inherit them), then as
    before."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(paths: list[Path], out_dir: Path, progress: bool, parameters: dict) -> list[dict]:
    import papermill as pm

    done = []
    for path in tqdm(paths, desc="notebooks", disable=not progress):
        declared = pm.inspect_notebook(str(path))
        params = {k: v for k, v in parameters.items() if k in declared}
        out = out_dir / path.name
        t = time.perf_counter()
        try:
            with environ({NOTEBOOK_ENV: str(Path(path).resolve())}):  # figures it draws are stamped with it
                pm.execute_notebook(
                    str(path),
                    str(out),
                    parameters=params,
                    kernel_name="python3",
                    cwd=str(path.parent),
                    progress_bar=False,
                )
        except pm.PapermillExecutionError as e:
            raise RuntimeError(
                f"{path.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}. The executed copy is {out}."
            ) from None
        done.append({"notebook": path.name, "seconds": round(time.perf_counter() - t, 1)})
    return done


def render_report(executed: list[Path], out_dir: str | Path) -> Path:
    """Static HTML of executed notebooks (outputs and figures included, no kernel needed) and an ``index.html``
    linking them with the first line of each; returns the index."""
    import nbformat
    from nbconvert import HTMLExporter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter()
    items = []
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        target = out_dir / f"{path.stem}.html"
        target.write_text(body)
        title = next(
            (c.source.splitlines()[0].lstrip("# ") for c in nb.cells if c.cell_type == "markdown" and c.source.strip()),
            path.stem,
        )
        items.append(f'<li><a href="{target.name}">{html.escape(title)}</a></li>')
    index = out_dir / "index.html"
    index.write_text(
        "<!doctype html><meta charset='utf-8'><title>fmfl-backdoor notebooks</title>"
        "<h1>Executed notebooks (a reconstruction of arXiv 2410.17573)</h1><ul>" + "".join(items) + "</ul>"
    )
    return index


# ------------------------------------------------------------------------------------------ nbval references
NBVAL_DIR = REPO_ROOT / "tests" / "nbval"
NBVAL_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "DNNL_MAX_CPU_ISA": "SSE41",
    "PAPER_REPRO_PROGRESS": "text",
    "HF_HUB_OFFLINE": "1",
}
"""Environment of the kernels that make and check the references: one thread and torch's, oneDNN's and MKL's
portable code paths, so that the same smoke run gives the same numbers on CPUs with other vector units."""
NBVAL_PARAMETERS = {
    "profile": "smoke",
    "results_dir": "../../build/nbval/results",
    "figures_dir": "../../build/nbval/figures",
}
"""Injected into every reference (paths relative to ``NBVAL_DIR``, where nbval starts the kernel)."""
CHECK_TAG = "nbval-check-output"
"""Cells whose outputs nbval compares (``pytest --nbval-lax``); every other cell must only run without error."""


def make_nbval_references(out_dir: str | Path = NBVAL_DIR, progress: bool = True) -> list[Path]:
    """Execute the numbered notebooks in ``smoke`` under :data:`NBVAL_ENV` and keep them in ``out_dir`` as the
    references of the nbval regression test: the outputs of cells tagged :data:`CHECK_TAG` (without images, which
    nbval does not compare), no other output. Regenerate them on purpose, after a change that should move a
    number: ``make nbval-refs``."""
    import nbformat
    import papermill as pm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with environ(NBVAL_ENV):
        for path in tqdm(numbered_notebooks(), desc="nbval references", disable=not progress):
            out = out_dir / path.name
            pm.execute_notebook(
                str(path),
                str(out),
                parameters=NBVAL_PARAMETERS,
                kernel_name="python3",
                cwd=str(out_dir),
                progress_bar=False,
            )
            nb = nbformat.read(out, as_version=4)
            for cell in nb.cells:
                cell.metadata.pop("papermill", None)
                cell.metadata.pop("execution", None)
                if cell.cell_type != "code":
                    continue
                if CHECK_TAG in cell.metadata.get("tags", []):
                    for o in cell.outputs:
                        for key in ("image/png", "image/jpeg", "image/svg+xml", "application/pdf"):
                            o.get("data", {}).pop(key, None)
                else:
                    cell.outputs = []
                    cell.execution_count = None  # nbval runs a cell with a count and checks it has outputs
            nb.metadata.pop("papermill", None)
            nbformat.write(nb, out)
            written.append(out)
    return written
