"""Smoke tier: every notebook runs top to bottom under papermill in the `smoke` profile, and is stored commit-ready
(a `parameters` cell, outputs stripped)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
FIGURE_NOTEBOOKS = sorted((NOTEBOOKS_DIR / "figures").glob("*.ipynb"))
README = NOTEBOOKS_DIR.parent / "README.md"
# figure files (stem → suffixes) a notebook must write into figures_dir in the smoke profile
EXPECTED_FIGURES = {
    "01_foundation_model": ["nb01_fm_samples_smoke"],
    "02_poison_synthetic_data": ["nb02_synthetic_poisoned_smoke"],
    "03_fl_without_defense": ["nb03_acc_asr_smoke"],
    "04_fl_with_defenses": ["nb04_defenses_iid_smoke", "nb04_defenses_dirichlet0.5_smoke"],
    "05_activation_bounds_walkthrough": ["nb05_unit_profile_smoke", "nb05_activations_smoke", "nb05_knobs_smoke"],
}


def test_every_numbered_notebook_is_known_and_declares_its_figures():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(EXPECTED_FIGURES), "a numbered notebook was added or renamed"


@pytest.mark.parametrize("nb_path", NOTEBOOKS + FIGURE_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_commit_ready(nb_path):
    raw = json.loads(nb_path.read_text(encoding="utf-8"))
    # nbformat 4.5 wants an id on every cell; without one, every papermill run writes new random ids into the diff
    assert all("id" in c for c in raw["cells"]), "a cell without an id (open and save it in Jupyter, or nbformat)"
    nb = nbformat.read(nb_path, as_version=4)
    assert nb.cells[0].cell_type == "markdown", "the first cell must state the claim/figure, inputs, deviations"
    params = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one code cell tagged `parameters`"
    assert 'profile = "quick"' in params[0].source
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"outputs not stripped in cells {stored}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke(nb_path, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    # the kernel inherits this environment: keep caches out of the repo, single-threaded, offline
    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PAPER_REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    figures = tmp_path / "figures"
    out = tmp_path / nb_path.name
    papermill.execute_notebook(
        str(nb_path),
        str(out),
        kernel_name="python3",
        cwd=str(NOTEBOOKS_DIR),
        parameters={"profile": "smoke", "results_dir": str(tmp_path / "results"), "figures_dir": str(figures)},
        progress_bar=False,
    )
    executed = nbformat.read(out, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    for stem in EXPECTED_FIGURES.get(nb_path.stem, []):
        for suffix in (".png", ".pdf"):
            assert (figures / (stem + suffix)).is_file(), f"{nb_path.name} did not write {stem}{suffix}"


def readme_figures() -> list[str]:
    """Stems of the figures the README's figure table promises (``figures/<stem>.png``)."""
    return sorted(set(re.findall(r"`figures/([\w.\-]+)\.png`", README.read_text())))


@pytest.fixture(scope="module")
def figure_batch(tmp_path_factory):
    """Every figure notebook run once through papermill against the committed quick tables."""
    pytest.importorskip("papermill")
    from paper_repro import notebooks

    tmp = tmp_path_factory.mktemp("figure_batch")
    notebooks.run_notebooks(
        FIGURE_NOTEBOOKS, tmp / "executed", progress=False, profile="quick", figures_dir=str(tmp / "figures")
    )
    return tmp / "figures"


def test_figure_notebooks_found_and_readme_lists_figures():
    assert len(FIGURE_NOTEBOOKS) >= 8, FIGURE_NOTEBOOKS
    assert len(readme_figures()) >= 10, "the README's figure table lists too few figures"


@pytest.mark.parametrize("stem", readme_figures())
def test_every_readme_figure_is_rebuilt_from_the_committed_tables(figure_batch, stem):
    for suffix in (".png", ".pdf"):
        assert (figure_batch / (stem + suffix)).is_file(), f"no figure notebook wrote {stem}{suffix}"


def test_executed_notebooks_render_to_a_static_report(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    from paper_repro import notebooks

    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PAPER_REPRO_RESULTS", str(tmp_path / "results"))
    nb = NOTEBOOKS_DIR / "03_fl_without_defense.ipynb"
    notebooks.run_notebooks(
        [nb],
        tmp_path / "run",
        progress=False,
        profile="smoke",
        results_dir=str(tmp_path / "results"),
        figures_dir=str(tmp_path / "figures"),
    )
    index = notebooks.render_report([tmp_path / "run" / nb.name], tmp_path / "html")
    page = (tmp_path / "html" / f"{nb.stem}.html").read_text()
    assert nb.stem in index.read_text() and "data:image/png;base64" in page


def test_the_papermill_batch_asks_its_kernels_for_text_progress_bars():
    import subprocess
    import sys

    code = "import paper_repro.progress as p; print(p.tqdm.__module__)"
    out = {
        v: subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**__import__("os").environ, "PAPER_REPRO_PROGRESS": v},
        ).stdout.strip()
        for v in ("text", "auto")
    }
    assert out["text"] == "tqdm.std" and out["auto"] != "tqdm.std"


# ------------------------------------------------------------------------------------------------- nbval
NBVAL_DIR = Path(__file__).resolve().parent / "nbval"
REFERENCES = sorted(NBVAL_DIR.glob("*.ipynb"))


def _code_sources(nb) -> list[str]:
    return [
        c.source for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


def test_every_numbered_notebook_has_an_up_to_date_nbval_reference():
    from paper_repro.notebooks import CHECK_TAG

    numbered = [p for p in NOTEBOOKS if p.stem[:2].isdigit()]
    assert [p.name for p in REFERENCES] == [p.name for p in numbered], "regenerate with `make nbval-refs`"
    for ref, src in zip(REFERENCES, numbered):
        r, s = nbformat.read(ref, as_version=4), nbformat.read(src, as_version=4)
        assert _code_sources(r) == _code_sources(s), f"{src.name} changed since its reference: `make nbval-refs`"
        checked = [c for c in r.cells if CHECK_TAG in c.metadata.get("tags", [])]
        assert checked and all(c.outputs for c in checked), f"{ref.name}: no compared output"


def _nbval(paths, cwd):
    from paper_repro.notebooks import NBVAL_ENV

    env = {**os.environ, **NBVAL_ENV}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
            *map(str, paths),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_numbered_notebooks_reproduce_the_outputs_of_their_references():
    """nbval in ``smoke``: the tagged cells' outputs (final ACC/ASR tables, counts, digests) must equal the committed
    references, every other cell must run without error."""
    pytest.importorskip("nbval")
    r = _nbval(REFERENCES, NBVAL_DIR.parent.parent)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_nbval_fails_when_a_number_changes(tmp_path):
    pytest.importorskip("nbval")
    from paper_repro.notebooks import CHECK_TAG

    nb = nbformat.read(NBVAL_DIR / "02_poison_synthetic_data.ipynb", as_version=4)
    cell = next(c for c in nb.cells if CHECK_TAG in c.metadata.get("tags", []))
    out = next(o for o in cell.outputs if "data" in o)
    text = out.data["text/plain"]
    changed = re.sub(r"\d+", lambda m: str(int(m.group()) + 1), text, count=3)
    assert changed != text
    out.data["text/plain"] = changed
    where = tmp_path / "a" / "b"  # the references' relative paths (../../build/nbval) stay inside tmp_path
    where.mkdir(parents=True)
    nbformat.write(nb, where / "02.ipynb")
    r = _nbval([where / "02.ipynb"], tmp_path)
    assert r.returncode != 0 and "differ" in r.stdout, r.stdout[-3000:]  # failed on the number, nothing else


def test_every_figure_of_a_kernel_is_shown_not_only_the_first(tmp_path):
    """Drawing in the package's style must not switch Jupyter's inline display off for the figures that follow
    (restoring rc settings once restored ``interactive`` to its value from before the inline backend started)."""
    papermill = pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook()
    plot = "fig = plots.tradeoff(pd.DataFrame({'variant': ['a'], 'acc': [0.8], 'asr': [0.1]}))"
    nb.cells = [
        nbformat.v4.new_code_cell("import pandas as pd\nfrom paper_repro import plots"),
        nbformat.v4.new_code_cell(plot),
        nbformat.v4.new_code_cell(plot),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook(
        str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False
    )
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    shown = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in out.cells[1:]]
    assert shown == [1, 1], shown
