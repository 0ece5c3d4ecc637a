"""The experiment on Flower (smoke): the same config through the in-process loop and through Flower's simulation
engine (a Ray worker per client) gives the same per-round ACC/ASR, bit for bit, when both train with one thread."""
import numpy as np
import pandas as pd
import pytest

import paper_repro as pr

pytest.importorskip("flwr", reason="Flower is an extra: pip install -e '.[flower]'")
pytestmark = pytest.mark.smoke

COLUMNS = ["round", "status", "acc", "asr", "acc_triggered", "acc_client_mean", "tpr", "fpr"]


def _history(cfg, engine, tmp_path):
    opts = pr.RunOptions.for_profile("smoke", engine=engine, threads=1, share_training=False)
    res = pr.run_experiment(cfg, results_dir=tmp_path / engine, progress=False, options=opts)
    assert not res.cached
    return res


@pytest.mark.parametrize("attack, defense", [("classic", "median"), ("fm", "act_bound")])
def test_flower_gives_the_in_process_numbers_bit_for_bit(tmp_path, attack, defense):
    cfg = pr.load_config("smoke", attack={"kind": attack, "num_malicious": 2}, defense={"name": defense})
    ours, flower = _history(cfg, "loop", tmp_path), _history(cfg, "flower", tmp_path)
    a, b = ours.history, flower.history
    cols = [c for c in COLUMNS if c in a]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True), check_exact=True)
    assert flower.run_dir.name == ours.run_dir.name  # one key: how a run executes is not part of it
    assert flower.provenance["options"]["engine"] == "flower"


def test_the_strategy_runs_any_defense_and_serves_the_bounded_model():
    from paper_repro.flower import DefenseStrategy

    cfg = pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": "act_bound"})
    strategy = DefenseStrategy(cfg)
    params = strategy.initialize_parameters(None)
    assert len(strategy.output.history) == 1 and strategy.output.history[0]["round"] == 0
    flat = np.frombuffer(params.tensors[0], dtype=np.uint8)
    assert flat.size > 0 and repr(strategy) == "DefenseStrategy(act_bound, smoke)"
