"""The papermill batch: run numbered notebooks and figure notebooks with parameters, executed copies to a build
folder (the committed notebooks stay output-free)."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from .store import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_NB_DIR = NOTEBOOKS_DIR / "figures"
BUILD_DIR = REPO_ROOT / "build" / "notebooks"


def numbered_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def figure_notebooks() -> list[Path]:
    return sorted(FIGURES_NB_DIR.glob("*.ipynb"))


def run_notebooks(paths: list[Path], out_dir: str | Path = BUILD_DIR, progress: bool = True,
                  **parameters) -> list[dict]:
    """Execute each notebook with the ``parameters`` it declares in its ``parameters`` cell (others are not
    injected); raise on the first failing one, naming the executed copy to open. Returns name/seconds per notebook."""
    import papermill as pm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for path in tqdm(paths, desc="notebooks", disable=not progress):
        declared = pm.inspect_notebook(str(path))
        params = {k: v for k, v in parameters.items() if k in declared}
        out = out_dir / path.name
        t = time.perf_counter()
        try:
            pm.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3", cwd=str(path.parent),
                                progress_bar=False)
        except pm.PapermillExecutionError as e:
            raise RuntimeError(f"{path.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}. "
                               f"The executed copy is {out}.") from None
        done.append({"notebook": path.name, "seconds": round(time.perf_counter() - t, 1)})
    return done
