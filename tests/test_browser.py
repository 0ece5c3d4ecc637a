"""Browser tier: a notebook opened in JupyterLab in a real Chromium, run top to bottom in the smoke profile; the
figure must render and no cell may show an error. Needs Debian's ``chromium`` and ``pip install playwright`` (no
browser download: Playwright drives the system browser). ``make test-browser`` runs it; CI runs it too."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of notebook 05 switched to the smoke profile, with clean settings/workspaces."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")
    work = tmp_path / "nb"
    work.mkdir()
    nb = json.loads((ROOT / "notebooks" / "05_activation_bounds_walkthrough.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]).replace('profile = "quick"', 'profile = "smoke"')
            cell["source"] = (src + f'\nfigures_dir = "{tmp_path / "figures"}"\n').splitlines(keepends=True)
    (work / "05_smoke.ipynb").write_text(json.dumps(nb))
    # render every cell (JupyterLab 4 only renders cells near the viewport by default)
    tracker = tmp_path / "s" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "s"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "w"),
        "PAPER_REPRO_CACHE": str(tmp_path / "cache"),
        "PAPER_REPRO_RESULTS": str(tmp_path / "results"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--allow-root",
            f"--ServerApp.root_dir={work}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 60 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_notebook_runs_in_jupyterlab_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page()
        page.goto(f"{lab}/lab/tree/05_smoke.ipynb")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        dialog = page.locator(".jp-Dialog button", has_text=re.compile(r"^Select$"))
        try:  # with several kernels installed JupyterLab may ask which one to start: take its preselection
            dialog.click(timeout=10_000)
        except Exception:
            pass
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.time() + float(os.environ.get("BROWSER_TIMEOUT", 600))
        while time.time() < deadline:  # done when every code cell shows its execution number, none a [*]
            prompts = [t.strip() for t in page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]
            if prompts and all(re.fullmatch(r"\[\d+\]:", t) for t in prompts):
                break
            page.wait_for_timeout(1_000)
        else:
            page.screenshot(path=str(Path(os.environ.get("BROWSER_SHOTS", "/tmp")) / "jupyterlab_timeout.png"))
            pytest.fail(f"the notebook did not finish within the time limit; prompts: {prompts}")
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']").count()
        images = page.locator(".jp-RenderedImage img").count()
        browser.close()
    assert errors == 0, f"{errors} cells show an error"
    assert images >= 3, f"only {images} figures rendered"
