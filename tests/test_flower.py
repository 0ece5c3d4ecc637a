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


@pytest.mark.parametrize("attack, defense", [("classic", "median"), ("fm", "act_bound"), ("fm", "spectral")])
def test_flower_gives_the_in_process_numbers_bit_for_bit(tmp_path, attack, defense):
    cfg = pr.load_config("smoke", attack={"kind": attack, "num_malicious": 2}, defense={"name": defense})
    ours, flower = _history(cfg, "loop", tmp_path), _history(cfg, "flower", tmp_path)
    a, b = ours.history, flower.history
    cols = [c for c in COLUMNS if c in a]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True), check_exact=True)
    assert flower.run_dir.name == ours.run_dir.name  # one key: how a run executes is not part of it
    assert flower.provenance["options"]["engine"] == "flower"


def test_the_strategy_runs_any_defense_and_serves_the_bounded_model():
    from paper_repro.integrations.flower import DefenseStrategy

    cfg = pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": "act_bound"})
    strategy = DefenseStrategy(cfg)
    params = strategy.initialize_parameters(None)
    assert len(strategy.output.history) == 1 and strategy.output.history[0]["round"] == 0
    flat = np.frombuffer(params.tensors[0], dtype=np.uint8)
    assert flat.size > 0 and repr(strategy) == "DefenseStrategy(act_bound, smoke)"


def test_run_many_on_a_local_ray_cluster_survives_a_lost_worker_and_skips_finished_runs(tmp_path, monkeypatch):
    """Three smoke runs as Ray tasks on a local cluster; the first task's worker dies once (fault injection) and is
    retried; the results equal the local backend's, and a second call serves them from their folders."""
    import ray

    from paper_repro.integrations.ray import FAULT_ONCE

    cfgs = [
        pr.load_config("smoke", attack={"kind": a}, defense={"name": d})
        for a, d in (("classic", "median"), ("fm", "none"), ("fm", "act_bound"))
    ]
    one_thread = pr.RunOptions.for_profile("smoke", threads=1)  # a Ray task trains on one thread too
    local = pr.run_many(cfgs, tmp_path / "local", progress=False, options=one_thread)
    marker = tmp_path / "killed_once"
    monkeypatch.setenv(FAULT_ONCE, str(marker))
    opts = pr.RunOptions.for_profile("smoke", backend="ray")
    try:
        remote = pr.run_many(cfgs, tmp_path / "ray", progress=False, options=opts)
        assert marker.exists(), "no worker was killed: the fault injection did not run"
        again = pr.run_many(cfgs, tmp_path / "ray", progress=False, options=opts)
    finally:
        ray.shutdown()
    for a, b, c in zip(local, remote, again):
        assert a.run_dir.name == b.run_dir.name == c.run_dir.name
        pd.testing.assert_frame_equal(a.history[["acc", "asr"]], b.history[["acc", "asr"]], check_exact=True)
        assert c.cached and c.history["acc"].equals(b.history["acc"])
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")]  # nothing half-written left


def test_the_readme_flower_example_runs():
    """The README's example, in smoke: our strategy in a plain Flower ServerApp, simulated."""
    import re
    from pathlib import Path

    from flwr.simulation import run_simulation

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "DefenseStrategy" in b)
    scope: dict = {}
    exec(code.replace('"quick"', '"smoke"'), scope)  # noqa: S102  (the README's own code)
    run_simulation(
        scope["server"],
        scope["client"],
        num_supernodes=scope["cfg"].fl.num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    history = scope["strategy"].output.history
    assert [r["round"] for r in history] == [0, 1, 2] and all(0 <= r["asr"] <= 1 for r in history)


def test_the_strategy_works_with_plain_flower_clients():
    """A Flower user's own clients (they return their model's arrays; Flower samples them): the strategy fuses,
    bounds and evaluates, and the served model is the bounded one."""
    import torch
    from flwr.client import ClientApp, NumPyClient
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    from paper_repro.integrations.flower import DefenseStrategy
    from paper_repro.models import build_model, state_keys

    cfg = pr.load_config("smoke", attack={"kind": "fm"}, defense={"name": "act_bound"})
    strategy = DefenseStrategy(cfg, protocol="weights")
    shape, classes = strategy.inputs.test.shape, strategy.inputs.test.num_classes

    class Plain(NumPyClient):  # what a user writes: load, train a few steps, send the arrays back
        def __init__(self, k):
            self.k = k

        def fit(self, parameters, config):
            model = build_model("tiny", shape, classes, seed=0)
            keys = state_keys(model)
            model.load_state_dict({**model.state_dict(), **{k: torch.from_numpy(a) for k, a in zip(keys, parameters)}})
            x, y = pr.prepare(cfg, progress=False).inputs.clients[self.k].tensors("cpu")
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            for i in range(0, len(y), 16):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
                opt.step()
            return [model.state_dict()[k].detach().numpy() for k in keys], len(y), {}

    client = ClientApp(client_fn=lambda ctx: Plain(int(ctx.node_config["partition-id"])).to_client())
    server = ServerApp(server_fn=lambda ctx: ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=2)))
    run_simulation(
        server,
        client,
        num_supernodes=cfg.fl.num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    history = strategy.output.history
    assert [r["round"] for r in history] == [0, 1, 2] and all(0 <= r["acc"] <= 1 for r in history)
    assert type(strategy.output.model).__name__ == "BoundedModel"
