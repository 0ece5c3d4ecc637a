"""The FM-integrated experiment on Flower (1.41, ``pip install -e '.[flower]'``): any defense of this package as a
Flower strategy, our local training and attacks in a ClientApp, the pipeline in a ServerApp.

- :class:`DefenseStrategy` is a Flower ``Strategy``. The server side of a round calls the in-process loop's own step
  functions (:mod:`paper_repro.fl`): aggregation through the defense (step 3, robust aggregators and detectors), FedDF
  fusion on the server's synthetic set (step 4), the post-fusion defense such as ``act_bound`` (step 5) and the
  evaluation of the served (bounded) model (step 6). The strategy keeps the per-round history in
  ``strategy.output`` as :class:`~paper_repro.fl.FLOutput`.
- :func:`client_app` trains a client as the in-process loop does (same seeds per client and round) and lets a
  malicious client poison its data and craft its update (:mod:`paper_repro.attacks`).
- :func:`server_app` builds the strategy from a config; :func:`run_flower` runs a config through Flower's simulation
  engine (Ray) and returns the same :class:`~paper_repro.fl.FLOutput` as :func:`paper_repro.fl.run_federated`.

Two protocols (``DefenseStrategy(protocol=...)``):

- ``"ours"`` (with :func:`client_app`, what :func:`run_flower` uses): the strategy sends the global model as one flat
  array to **every** client with the round's sampled ids in the config (``{"round", "ids"}``), so that the sample is
  drawn from the run's seed exactly as in-process; a client not sampled returns at once. A sampled client returns
  two flat arrays: its local model θ (the fusion's teacher) and the update it sends Δ (crafted if malicious).
- ``"weights"`` (for your own Flower clients): plain Flower. The strategy sends the model's floating-point state
  arrays (``state_dict`` order, :func:`paper_repro.models.state_keys`), Flower samples ``clients_per_round``
  clients, each returns its trained arrays, and Δ = θ − global. Only the malicious ground truth is unknown to the
  server here, so TPR/FPR are not computed.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time

import numpy as np
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import Strategy
from flwr.simulation import run_simulation

from .. import defenses as defense_registry
from ..config import Config
from ..defenses import Defense
from ..fl import (
    DIVERGED,
    OK,
    FLInputs,
    FLOutput,
    Timer,
    aggregate,
    attackers,
    attacking,
    evaluate_served,
    fedavg_weights,
    finish_row,
    fuse,
    init_global_model,
    is_finite,
    local_training,
    round_context,
    sample_clients,
    screen_synthetic,
    serve,
)
from ..inputs import prepare
from ..metrics import no_metrics
from ..models import build_model, flat_state, load_flat_state, state_keys
from ..options import RunOptions, options_for
from ..rng import derive_seed, np_rng


class DefenseStrategy(Strategy):
    """A Flower strategy that runs one of this package's defenses, with FedDF fusion on the server's synthetic set.

    ``cfg``: the experiment (its seed draws the clients sampled each round); ``defense``: an instance (default: the
    one ``cfg.defense`` names); ``inputs``: the server's data (synthetic sets, test sets; default
    :func:`paper_repro.inputs.prepare` of ``cfg``)."""

    def __init__(
        self,
        cfg: Config,
        defense: Defense | None = None,
        options: RunOptions | None = None,
        inputs: FLInputs | None = None,
        progress: bool = False,
        protocol: str = "ours",
    ):
        if protocol not in ("ours", "weights"):
            raise ValueError(f"protocol={protocol!r}; choose ours (with client_app) or weights (plain Flower clients)")
        self.protocol = protocol
        self.cfg, self.opts = cfg, options_for(cfg.profile, options)
        self.defense = defense or defense_registry.get(cfg.defense.name, **cfg.defense.params)
        self.inputs = inputs or prepare(cfg, progress, self.opts).inputs
        self.output = FLOutput()
        self.model: torch.nn.Module | None = None
        self._rng = np_rng(cfg.seed, "client_sampling")
        self._kd = self.inputs.synthetic_kd.tensors(self.opts.device)
        self._ids = np.zeros(0, np.int64)

    def __repr__(self) -> str:
        return f"DefenseStrategy({self.defense.name}, {self.cfg.profile})"

    # --- round 0: the global model initialised on the (possibly poisoned) synthetic set
    def initialize_parameters(self, client_manager) -> Parameters:
        t = time.perf_counter()
        self.model = init_global_model(self.cfg, self.inputs, self.opts.device)
        screened = {}
        if self.defense.screens:  # step 0, data side: the in-process loop's own function, then init on what is kept
            self.inputs, screened = screen_synthetic(self.cfg, self.opts, self.defense, self.inputs, self.model)
            self._kd = self.inputs.synthetic_kd.tensors(self.opts.device)
            self.model = init_global_model(self.cfg, self.inputs, self.opts.device)
        self.output.history.append(
            {
                "round": 0,
                **evaluate_served(self.model, self.cfg, self.inputs, self.opts),
                **screened,
                "init_seconds": time.perf_counter() - t,
                "status": OK,
            }
        )
        self.output.model = self.output.fused = self.model
        return self._parameters()

    def _parameters(self) -> Parameters:
        """The global model as the protocol sends it."""
        if self.protocol == "weights":
            sd = self.model.state_dict()
            return ndarrays_to_parameters([sd[k].detach().cpu().numpy() for k in state_keys(self.model)])
        return ndarrays_to_parameters([flat_state(self.model).cpu().numpy()])

    # --- steps 1-2: sample from the run's seed, every client hears the round
    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        if self.output.history and self.output.history[-1].get("status") == DIVERGED:
            return []
        if self.protocol == "weights":  # plain Flower: its client manager samples
            ins = FitIns(parameters, {"round": server_round})
            return [(c, ins) for c in client_manager.sample(num_clients=self.cfg.fl.clients_per_round)]
        self._ids = sample_clients(self.cfg, self._rng, self.inputs.attack.malicious)
        client_manager.wait_for(self.cfg.fl.num_clients)
        ins = FitIns(parameters, {"round": server_round, "ids": ",".join(map(str, self._ids))})
        return [(proxy, ins) for proxy in client_manager.all().values()]

    # --- steps 3-6 on the server: the in-process loop's own function
    def aggregate_fit(self, server_round: int, results, failures):
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed: {failures[:1]}")
        if self.protocol == "weights":
            return self._aggregate_weights(server_round, results)
        sent = {
            int(r.metrics["partition"]): (parameters_to_ndarrays(r.parameters), float(r.metrics["seconds"]))
            for _, r in results
            if r.metrics.get("trained")
        }
        missing = sorted(set(self._ids.tolist()) - set(sent))
        if missing:
            raise RuntimeError(f"round {server_round}: sampled clients {missing} sent nothing")
        thetas = torch.stack([torch.from_numpy(sent[k][0][0]) for k in self._ids]).to(self.opts.device)
        updates = torch.stack([torch.from_numpy(sent[k][0][1]) for k in self._ids]).to(self.opts.device)
        weights = fedavg_weights(self.cfg, self.inputs, self._ids)
        row = {
            "round": server_round,
            "status": OK,
            "num_attackers": attackers(self._ids, self.inputs, attacking(self.cfg, server_round)),
            "local_seconds": max(s for _, s in sent.values()),
        }
        return self._server_round(server_round, self._ids, thetas, updates, weights, row)

    def _aggregate_weights(self, server_round: int, results):
        """Steps 3-6 for plain Flower clients: Δ_i = θ_i − global, weights = their example counts."""
        results = sorted(results, key=lambda r: str(r[0].cid))
        thetas = torch.stack(
            [
                torch.cat(
                    [
                        torch.from_numpy(np.asarray(a, np.float32)).reshape(-1)
                        for a in parameters_to_ndarrays(res.parameters)
                    ]
                )
                for _, res in results
            ]
        ).to(self.opts.device)
        sizes = torch.tensor([float(res.num_examples) for _, res in results])
        weights = sizes if self.cfg.fl.weighting == "samples" else torch.ones(len(results))
        ids = np.arange(len(results))  # positions: a plain client does not say who it is
        return self._server_round(
            server_round,
            ids,
            thetas,
            thetas - flat_state(self.model),
            weights,
            {"round": server_round, "status": OK},
            detection=False,
        )

    def _server_round(
        self,
        server_round: int,
        ids: np.ndarray,
        thetas: torch.Tensor,
        updates: torch.Tensor,
        weights: torch.Tensor,
        row: dict,
        detection: bool = True,
    ):
        """Steps 3–6 through the in-process loop's step functions on what the clients sent, then the round's
        bookkeeping; returns what ``aggregate_fit`` returns. ``detection=False``: TPR/FPR are NaN (the server cannot
        know who is malicious)."""
        timer, g = Timer(), flat_state(self.model)
        ctx = round_context(self.cfg, self.opts, self.inputs, self.model, server_round, ids)
        with timer("aggregate"):
            agg = aggregate(self.defense, g, updates, weights, ctx, self.inputs.attack.malicious)
            model = load_flat_state(copy.deepcopy(self.model), agg.state)
        with timer("fusion"):
            hooks = self.defense.fusion_hooks(dataclasses.replace(ctx, global_model=model))
            model = fuse(self.cfg, self.opts, model, thetas, ids, agg.flagged, self._kd, server_round, hooks)
        self.model = model
        row.update({**agg.columns, **timer.take()})
        if not detection:
            row.update({"tpr": float("nan"), "fpr": float("nan")})
        if not is_finite(model):
            row.update({"status": DIVERGED, **no_metrics()})
        else:
            self.output.model, metrics = serve(self.defense, model, ctx, self.cfg, self.inputs, self.opts, timer)
            row = finish_row({**row, **metrics})
            self.output.fused = model
            self.output.flagged.append(agg.flagged)
        self.output.history.append(row)
        return self._parameters(), {k: float(row[k]) for k in ("acc", "asr") if k in row}

    # evaluation is part of aggregate_fit (the served model is evaluated on the server's test sets)
    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class _Client(NumPyClient):
    """Client ``k`` of a config: trains as the in-process loop does; a malicious one poisons and crafts."""

    def __init__(self, cfg: Config, k: int, inputs: FLInputs, opts: RunOptions):
        self.cfg, self.k, self.inputs, self.opts = cfg, k, inputs, opts

    def fit(self, parameters, config):
        rnd, ids = int(config["round"]), [int(i) for i in str(config["ids"]).split(",")]
        g = torch.from_numpy(parameters[0]).to(self.opts.device)
        attack, active = self.inputs.attack, attacking(self.cfg, rnd)
        if active:  # every client hears every round (e.g. Neurotoxin tracks the global model)
            attack.begin_round(rnd, g)
        if self.k not in ids:
            return [np.zeros(0, np.float32)], 0, {"partition": self.k, "trained": 0}
        t = time.perf_counter()
        test = self.inputs.test
        model = build_model(
            self.cfg.model.name, test.shape, test.num_classes, derive_seed(self.cfg.seed, "model_init")
        ).to(self.opts.device)
        load_flat_state(model, g)
        own = self.inputs.clients[self.k]
        data = (attack.local_data(self.k, own) if active else own).tensors(self.opts.device)
        objective = attack.local_objective(self.k) if active else None
        loop = dataclasses.replace(self.opts, engine="loop")  # one client per process: the reference loop
        theta = local_training(self.cfg, loop, model, [data], np.array([self.k]), rnd, objectives=[objective])[0]
        update = attack.craft_update(self.k, theta - g) if active else theta - g
        return (
            [theta.cpu().numpy(), update.cpu().numpy()],
            len(self.inputs.clients[self.k]),
            {"partition": self.k, "trained": 1, "seconds": time.perf_counter() - t},
        )


def client_app(cfg: Config, options: RunOptions | None = None, threads: int = 1) -> ClientApp:
    """A ClientApp whose client ``partition-id`` is client k of ``cfg`` (its data, and its attack if malicious).
    Each worker process prepares the config's data once; ``threads``: torch threads per client process."""
    opts = options_for(cfg.profile, options)
    prepared: dict[str, FLInputs] = {}  # per worker process, filled on its first client

    def client_fn(context: Context):
        if "inputs" not in prepared:
            torch.set_num_threads(threads)  # a worker process of its own: one client at a time
            prepared["inputs"] = prepare(cfg, False, opts).inputs
        return _Client(cfg, int(context.node_config["partition-id"]), prepared["inputs"], opts).to_client()

    return ClientApp(client_fn=client_fn)


def server_app(strategy: DefenseStrategy) -> ServerApp:
    """A ServerApp that runs ``strategy`` for its config's number of rounds."""

    def server_fn(context: Context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=strategy.cfg.fl.num_rounds))

    return ServerApp(server_fn=server_fn)


def run_flower(
    cfg: Config,
    options: RunOptions | None = None,
    defense: Defense | None = None,
    cpus_per_client: int = 1,
    progress: bool = False,
) -> FLOutput:
    """``cfg`` through Flower's simulation engine (Ray, one virtual node per client): the same
    :class:`~paper_repro.fl.FLOutput` as :func:`paper_repro.fl.run_federated`."""
    opts = options_for(cfg.profile, options)
    strategy = DefenseStrategy(cfg, defense, opts, progress=progress)
    run_simulation(
        server_app=server_app(strategy),
        client_app=client_app(cfg, opts, cpus_per_client),
        num_supernodes=cfg.fl.num_clients,
        backend_config={
            "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "log_to_driver": False},
        },
        verbose_logging=False,
    )
    if len(strategy.output.history) < 2 and cfg.fl.num_rounds > 0:
        raise RuntimeError("the Flower simulation ran no round (see its log above)")
    return strategy.output
