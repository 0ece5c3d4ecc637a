"""The resumable walk of the calibrated and defense studies (paper_repro.studies.calibrated.walk): batches in order,
a budget judged by the slowest batch, and batches packed so that no worker waits at a batch's end."""

from __future__ import annotations

import pandas as pd
import pytest

from paper_repro.options import RunOptions
from paper_repro.studies import calibrated as cal

pytestmark = pytest.mark.unit


def test_packed_pairs_a_batch_that_leaves_a_worker_idle_with_the_next_one_that_computes():
    # 5 trainings on 2 workers leave one idle at the end: the next computing batch joins it (5 + 5 = 5 slots, not 6)
    assert cal.packed({"a": 5, "b": 5, "c": 5}, 2) == [["a", "b"], ["c"]]
    # an even batch stays alone; a served batch (0) rides along with the group before it
    assert cal.packed({"a": 4, "b": 0, "c": 3, "d": 0, "e": 1, "f": 2}, 2) == [["a", "b"], ["c", "d", "e"], ["f"]]
    # one worker: never packed; a group holds at most two computing batches
    assert cal.packed({"a": 5, "b": 5}, 1) == [["a"], ["b"]]
    assert cal.packed({"a": 1, "b": 1, "c": 1}, 2) == [["a", "b"], ["c"]]
    assert cal.packed({"a": 0, "b": 3}, 2) == [["a"], ["b"]]


class _Res:
    def __init__(self, cfg):
        self.history = cfg
        self.run_dir = type("D", (), {"name": f"run_{cfg['i']}"})()


def test_walk_runs_packed_groups_in_order_and_stops_at_the_budget(monkeypatch, tmp_path):
    calls, now = [], [0.0]
    sizes = {"a": 5, "b": 5, "c": 4, "d": 4}

    def run_many(cfgs, results_dir=None, **kw):
        calls.append(kw["desc"])
        now[0] += 60.0 * sum(1 for c in cfgs)  # a minute per run
        return [_Res(c) for c in cfgs]

    import paper_repro.runner as runner

    monkeypatch.setattr(runner, "run_many", run_many)
    monkeypatch.setattr(cal, "trainings_needed", lambda batch, *a, **k: sizes[str(batch[0][0]["b"])])
    monkeypatch.setattr(cal, "save_run_table", lambda df, *a, **k: df)
    cells = [({"b": b, "seed": s}, {"i": f"{b}{s}", "asr": 0.5}) for b in "abcd" for s in range(2)]
    rows_of = lambda labels, history, run: [{**labels, "asr": history["asr"], "run": run}]  # noqa: E731
    logs = []
    df = cal.walk(
        cells,
        "t",
        "quick",
        "b",
        budget_minutes=9,
        options=RunOptions(jobs=2),
        log=logs.append,
        clock=lambda: now[0],
        rows_of=rows_of,
        progress=False,
    )
    # a and b leave a worker idle alone: they run as one group (4 runs, 4 minutes); c starts at 4 + 4 <= 9;
    # d would start at 6 + 4 (the slowest group so far) > 9: the walk stops and says how to continue
    assert calls == ["a + b", "c"]
    assert list(dict.fromkeys(df["b"])) == ["a", "b", "c"] and len(df) == 6
    assert logs[-1] == "budget reached: next would be 'd'; run the same command again to continue"
    assert "a: mean ASR 0.500" in logs and "b: mean ASR 0.500" in logs
    with pytest.raises(ValueError, match="must be > 0"):
        cal.walk(cells, "t", "quick", "b", 0)
    assert isinstance(df, pd.DataFrame)
