"""Progress bars: ``tqdm.auto`` (a widget in JupyterLab, text in a terminal), or plain text when
``$PAPER_REPRO_PROGRESS`` is ``text`` — what the papermill batch sets, so that executed copies read as text instead of
holding widget views that render as nothing outside a live kernel."""

from __future__ import annotations

import os

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

if os.environ.get("PAPER_REPRO_PROGRESS") == "text":
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
