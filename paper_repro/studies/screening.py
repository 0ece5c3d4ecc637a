"""The data-side defenses' study (docs/protocol.md, "Data-side defenses"): what the screens removed, read from the
round-0 rows of the runs of a held-out table (``heldout_screening_<profile>.csv``), beside the final ACC/ASR.

``python -m paper_repro.studies.screening`` prints, per setting × defense label, the means over seeds of the images
removed from the init set, the share of the attack's images among them (TPR) and of the others (FPR), round-0 ASR
(after initialisation on the kept set) and final ACC/ASR.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd

from ..ledger import ledger_dir, read_record
from ..tables import read_table

COLUMNS = ["screen_init_removed", "screen_init_tpr", "screen_init_fpr", "asr"]


def round0(run: str, ledger: Path | None = None) -> dict:
    """Row 0 of run ``run``'s metrics, read from its ledger record (NaN columns where the run screened nothing)."""
    path = Path(ledger or ledger_dir()) / f"{run}.json"
    m = pd.read_csv(io.StringIO(read_record(path)["text"]["metrics.csv"]))
    first = m[m["round"] == 0].iloc[0]
    return {("asr_round0" if c == "asr" else c): first.get(c, float("nan")) for c in COLUMNS}


def screening_report(profile: str = "quick", tables_dir: str | Path | None = None, ledger: Path | None = None):
    """Per setting × defense: mean over seeds of the screen's round-0 columns and of the final ACC/ASR."""
    df = read_table("heldout_screening", profile, tables_dir)
    rows = pd.DataFrame([{**r, **round0(r["run"], ledger)} for r in df.to_dict("records")])
    cols = ["acc", "asr", "asr_round0", "screen_init_removed", "screen_init_tpr", "screen_init_fpr"]
    out = rows.groupby(["setting", "defense"], sort=False)[cols].mean()
    return out.assign(n=rows.groupby(["setting", "defense"], sort=False).size()).reset_index()


if __name__ == "__main__":
    print(screening_report(*sys.argv[1:2]).round(3).to_string(index=False))
