"""Speed, measured side by side in one run. Not a test: numbers depend on the machine and its load.

    python benchmarks/speed.py                        # everything; JSON in benchmarks/results/speed_<cpu|cuda>.json
    python benchmarks/speed.py --parts engines flops  # a subset: peak engines flower flops sampler overhead rss
                                                      #   eval recompute jobs (--merge keeps the other parts)
    python benchmarks/speed.py --rounds 5

Workload: Fashion-MNIST train (60k) split IID over 100 clients, 10 sampled per round, 1 local epoch,
batch 32, the quick profile's CNN, SGD lr 0.05 momentum 0.5. Seconds per round of local training:

- ``loop``: our per-client reference loop (``paper_repro.training.local_train``, channels_last as in quick; what
  ``RunOptions.engine="auto"`` runs on CPU), fp32;
- ``loop_bf16``: the same with ``fl.precision="bf16"`` (autocast; tests/test_engine.py bounds the difference);
- ``threads`` / ``threads_bf16``: the same loop, two clients at once on one intra-op thread each
  (``RunOptions(engine="threads")``);
- ``batched`` / ``batched_bf16``: the round's clients as one vmapped computation (``paper_repro.local_training``; what
  ``auto`` runs on a GPU);
- ``research_loop``: the authors' style — deep copy per client, a DataLoader, default memory format;
- ``flower``: Flower 1.41 simulation (Ray), same model, data and hyper-parameters, ``num_cpus`` per actor 1
  (fastest here) and 2; Ray start-up reported separately.

Plus the fp32 matmul peak of this machine, the achieved FLOP rate of client training (FLOPs counted by
``torch.utils.flop_counter``; bf16 FLOPs are set against the fp32 peak, as the issue asks), synthetic images per
second of our DDPM sampler (fp32, bf16, bf16 + torch.compile) vs a stock diffusers loop (``torch.no_grad`` as in
diffusers' pipelines, fp32, one UNet call per guidance branch) at equal steps, with the real-classifier accuracy of
the fp32 and bf16 samples; each defense's overhead per round from the committed grid table; and the peak RSS of the
quick main job (``python -m paper_repro main --profile quick``, run afresh in a temporary results folder).
For the recompute (``make results``): evaluation batch sizes (``eval``), one quick run under each execution change —
evaluation batches, init cache, post-fusion defenses side by side on one training (``recompute``) — and runs two
at a time in worker processes vs one at a time (``jobs``).

The ``ours`` engine in the ratios is the fastest of our engines on this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from paper_repro.data import load_dataset
from paper_repro.local_training import batched_local_train, threaded_local_train
from paper_repro.models import build_model, flat_state
from paper_repro.training import local_train

OUT = Path(__file__).resolve().parent / "results"
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # on a GPU every part reports the GPU's figures
NUM_CLIENTS, PER_ROUND, EPOCHS, BATCH, LR, MOMENTUM = 100, 10, 1, 32, 0.05, 0.5


def workload(seed: int = 0):
    train, _ = load_dataset("fashion_mnist")
    x, y = train.tensors()
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), NUM_CLIENTS)
    clients = [(x[p].to(DEV), y[p].to(DEV)) for p in parts]
    model = build_model("cnn", (1, 28, 28), 10, seed=seed).to(DEV)
    return clients, model


def sampled(rnd: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, rnd]).choice(NUM_CLIENTS, PER_ROUND, replace=False))


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """fp32 GFLOP/s of an n×n matmul, best of ``reps``."""
    a, b = torch.randn(n, n, device=DEV), torch.randn(n, n, device=DEV)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    if DEV.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if DEV.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def research_local_train(model, x, y, seed):
    m = copy.deepcopy(model).train()
    dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
    for _ in range(EPOCHS):
        for xb, yb in dl:
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            opt.step()
    return flat_state(m)


def engines(clients, model, rounds: int) -> dict:
    """Median seconds per round of each engine, interleaved round by round so that load drifts hit all alike."""

    def gens(ids, r):
        return [torch.Generator().manual_seed(int(k) + 1000 * r) for k in ids]

    def batched(precision):
        return lambda ids, r: batched_local_train(
            model, [clients[k] for k in ids], EPOCHS, LR, MOMENTUM, BATCH, gens(ids, r), precision=precision
        )

    def loop(precision):
        return lambda ids, r: torch.stack(
            [
                local_train(model, *clients[k], EPOCHS, LR, MOMENTUM, BATCH, g, True, precision=precision)
                for k, g in zip(ids, gens(ids, r))
            ]
        )

    def threads(precision):
        return lambda ids, r: threaded_local_train(
            model, [clients[k] for k in ids], EPOCHS, LR, MOMENTUM, BATCH, gens(ids, r), True, precision=precision
        )

    fns = {
        "loop": loop("fp32"),
        "loop_bf16": loop("bf16"),
        "threads": threads("fp32"),
        "threads_bf16": threads("bf16"),
        "batched": batched("fp32"),
        "batched_bf16": batched("bf16"),
        "research_loop": lambda ids, r: torch.stack(
            [research_local_train(model, *clients[k], int(k) + 1000 * r) for k in ids]
        ),
    }
    times = {k: [] for k in fns}
    for r in range(rounds + 1):  # round 0 warms up
        ids = sampled(r)
        for name, fn in fns.items():
            dt = _timed(lambda: fn(ids, r))
            if r:
                times[name].append(dt)
    return {k: statistics.median(v) for k, v in times.items()} | {"rounds": rounds}


def client_flops(model, clients) -> float:
    """FLOPs of local training in one round (forward + backward over every sampled client's data, 1 epoch)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).cpu()
    xb, yb = clients[0][0][:BATCH].cpu(), clients[0][1][:BATCH].cpu()
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(m(xb), yb).backward()
    per_sample = fc.get_total_flops() / BATCH
    return per_sample * sum(len(clients[k][0]) for k in sampled(1)) * EPOCHS


def flower(clients, model, rounds: int, num_cpus: int) -> dict:
    """Flower 1.41 simulation of the same workload; seconds per round from the strategy's own clock."""
    try:
        import flwr
        from flwr.client import ClientApp, NumPyClient
        from flwr.common import Context, ndarrays_to_parameters
        from flwr.server import ServerApp, ServerAppComponents, ServerConfig
        from flwr.server.strategy import FedAvg
        from flwr.simulation import run_simulation
    except ImportError:
        return {"skipped": "flwr not installed: pip install -e '.[flower]'"}
    data = [(cx.cpu().numpy(), cy.cpu().numpy()) for cx, cy in clients]  # Flower's clients run on the CPU here
    init = [v.detach().cpu().numpy() for v in model.state_dict().values()]
    keys = list(model.state_dict())
    stamps: list[float] = []

    class Client(NumPyClient):
        def __init__(self, cid: int):
            self.cid = cid

        def fit(self, parameters, config):
            torch.set_num_threads(num_cpus)
            m = build_model("cnn", (1, 28, 28), 10, seed=0)
            m.load_state_dict({k: torch.from_numpy(v) for k, v in zip(keys, parameters)})
            x, y = data[self.cid]
            research_local_train(m, torch.from_numpy(x), torch.from_numpy(y), self.cid)
            return [v.detach().numpy() for v in m.state_dict().values()], len(y), {}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            stamps.append(time.perf_counter())
            return super().configure_fit(server_round, parameters, client_manager)

    def server_fn(context: Context):
        strategy = TimedFedAvg(
            fraction_fit=PER_ROUND / NUM_CLIENTS,
            fraction_evaluate=0.0,
            min_fit_clients=PER_ROUND,
            min_available_clients=NUM_CLIENTS,
            initial_parameters=ndarrays_to_parameters(init),
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds + 1))

    t0 = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=NUM_CLIENTS,
        backend_config={
            "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": torch.get_num_threads(), "log_to_driver": False},
        },
    )
    total = time.perf_counter() - t0
    stamps.append(time.perf_counter())
    per_round = np.diff(stamps)[1:]  # drop round 1 (actor start-up)
    return {
        "flwr": flwr.__version__,
        "num_cpus_per_actor": num_cpus,
        "seconds_per_round": float(np.median(per_round)),
        "startup_and_first_round": float(stamps[1] - t0) if len(stamps) > 1 else total,
        "total": total,
    }


def sampler(steps: int = 25, n_per_class: int = 25) -> dict:
    """Images/s of our sampler (fp32, bf16, bf16 + compile) vs the stock diffusers loop, same weights, steps,
    guidance and batch; real-classifier accuracy of the fp32 and bf16 samples."""
    from diffusers import DDIMScheduler

    from paper_repro.data import REPO_ROOT
    from paper_repro.fm import ClassConditionalDDPM
    from paper_repro.fm.quality import synthetic_accuracy

    fm = ClassConditionalDDPM.load(REPO_ROOT / "data/fm/fashion_mnist_ddpm")
    fm.unet.to(DEV)
    n = n_per_class * len(fm.classes)
    samples = {}

    def ours(precision, compile=False):
        def go():
            samples[precision] = fm.generate(
                n_per_class,
                torch.Generator().manual_seed(0),
                steps,
                2.0,
                n,
                False,
                1.0,
                precision=precision,
                compile=compile,
            )

        return go

    out = {"images": n, "steps": steps}
    out["compile_first_call_s"] = _timed(
        lambda: fm.generate(
            n_per_class, torch.Generator().manual_seed(0), 1, 2.0, n, False, 1.0, precision="bf16", compile=True
        )
    )

    @torch.no_grad()
    def stock():
        tc = fm.train_config
        sched = DDIMScheduler(
            num_train_timesteps=tc.num_train_timesteps, beta_schedule=tc.beta_schedule, clip_sample=True
        )
        sched.set_timesteps(steps)
        y = torch.arange(len(fm.classes)).repeat_interleave(n_per_class)
        null = torch.full_like(y, len(fm.classes))
        x = torch.randn((n, *fm.shape), generator=torch.Generator().manual_seed(0)).to(DEV)
        y, null = y.to(DEV), null.to(DEV)
        for t in sched.timesteps:
            e_c = fm.unet(x, t, class_labels=y).sample
            e_u = fm.unet(x, t, class_labels=null).sample
            x = sched.step(e_u + 2.0 * (e_c - e_u), t, x, eta=1.0).prev_sample

    variants = {
        "stock": stock,
        "ours_fp32": ours("fp32"),
        "ours_bf16": ours("bf16"),
        "ours_bf16_compiled": ours("bf16", compile=True),
    }
    times = {k: [] for k in variants}
    for _ in range(2):  # interleaved, best of two
        for k, fn in variants.items():
            times[k].append(_timed(fn))
    ips = {k: n / min(v) for k, v in times.items()}
    out |= {"images_per_s": ips, "ratio_vs_stock": {k: v / ips["stock"] for k, v in ips.items() if k != "stock"}}
    train, test = load_dataset("fashion_mnist")
    out["real_classifier_accuracy"] = {
        p: synthetic_accuracy(s, train, test, epochs=1)["synthetic_acc"] for p, s in samples.items()
    }
    return out


def overheads() -> dict:
    """Mean defense overhead per round (share of a round's seconds) from the committed quick grid table."""
    import pandas as pd

    from paper_repro.tables import table_path

    path = table_path("grid", "quick")
    if not path.exists():
        return {"skipped": f"{path} missing: python -m paper_repro grid --profile quick"}
    df = pd.read_csv(path)
    g = df.groupby("defense")[["defense_seconds", "round_seconds", "overhead"]].mean().round(4)
    return g.sort_values("overhead").to_dict(orient="index")


def peak_rss_main_job() -> dict:
    """Peak resident memory of ``python -m paper_repro main --profile quick`` run afresh (temporary results and run
    cache; the shipped FM and the synthetic-set cache are reused)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"PAPER_REPRO_RESULTS": tmp}
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "paper_repro", "main", "--profile", "quick", "--out", tmp]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                cmd, env=env, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=err
            )
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (not Ray's or any other child's)
            secs = time.perf_counter() - t
            if os.waitstatus_to_exitcode(status):
                err.seek(0)
                return {"failed": err.read()[-2000:].decode(errors="replace")}
    rss_kb = usage.ru_maxrss  # KiB on Linux
    return {"peak_rss_gb": rss_kb * 1024 / 1e9, "seconds": secs}


def eval_batches(n: int = 10_000, reps: int = 3) -> dict:
    """Seconds to classify ``n`` Fashion-MNIST-sized images with the quick CNN: batches of 1,000 with only the images
    in channels_last (how evaluation ran before), of 1,000 and of 32 with model and images in channels_last (now)."""
    model = build_model("cnn", (1, 28, 28), 10, 0).to(DEV)
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(DEV)
    xc = x.contiguous(memory_format=torch.channels_last)
    out = {}
    for name, m, xx, bs in (
        ("bs1000_input_only_channels_last", model, xc, 1000),
        ("bs1000_channels_last", copy.deepcopy(model).to(memory_format=torch.channels_last), xc, 1000),
        ("bs32_channels_last", copy.deepcopy(model).to(memory_format=torch.channels_last), xc, 32),
    ):
        m.eval()

        def run(m=m, xx=xx, bs=bs):
            with torch.inference_mode():
                for xb in xx.split(bs):
                    m(xb)

        run()
        out[name] = statistics.median(_timed(run) for _ in range(reps))
    out["speedup_bs32_vs_before"] = out["bs1000_input_only_channels_last"] / out["bs32_channels_last"]
    return out


class _FreshRuns:
    """Temporary results and cache folders for runs measured afresh; the synthetic-set cache is shared (linked) so
    that no part re-draws the FM's images."""

    def __enter__(self):
        from paper_repro.store import cache_dir

        self._tmp = tempfile.TemporaryDirectory()
        root = Path(self._tmp.name)
        (root / "cache").mkdir()
        syn = cache_dir() / "synthetic"
        if syn.exists():
            (root / "cache" / "synthetic").symlink_to(syn.resolve())
        self._env = {k: os.environ.get(k) for k in ("PAPER_REPRO_RESULTS", "PAPER_REPRO_CACHE")}
        os.environ["PAPER_REPRO_RESULTS"], os.environ["PAPER_REPRO_CACHE"] = str(root / "results"), str(root / "cache")
        return root

    def __exit__(self, *exc):
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._tmp.cleanup()


def recompute_parts() -> dict:
    """One quick run (FM attack, IID, seed 0) measured afresh under each of this session's execution changes, side by
    side: evaluation batches of 1,000 vs 32 (``RunOptions.eval_batch_size``), the initial model trained vs loaded
    from the init cache, and four post-fusion defenses trained one by one vs served side by side from one training
    (``share_training``)."""
    from paper_repro.options import RunOptions
    from paper_repro.profiles import load_config
    from paper_repro.runner import run_experiment, run_many

    def run(options: dict | None = None, **kw) -> dict:
        t = time.perf_counter()
        res = run_experiment(
            load_config("quick", attack={"kind": "fm"}, **kw),
            progress=False,
            force=True,
            options=RunOptions.for_profile("quick", **(options or {})),
        )
        return {"seconds": time.perf_counter() - t, "acc": float(res.final["acc"]), "asr": float(res.final["asr"])}

    out = {}
    with _FreshRuns():
        out["eval_bs1000_init_trained"] = run({"eval_batch_size": 1000})
        out["eval_bs32_init_cached"] = run()
        with _FreshRuns():
            out["eval_bs32_init_trained"] = run()
        post = ("act_bound", "mm_bm", "mmac", "pruning")
        out["post_fusion_one_by_one"] = [run({"share_training": False}, defense=d) for d in post]
        t = time.perf_counter()
        run_many([load_config("quick", attack={"kind": "fm"}, defense=d) for d in post], progress=False, force=True)
        out["post_fusion_alongside_seconds"] = time.perf_counter() - t
    out["speedup_run"] = out["eval_bs1000_init_trained"]["seconds"] / out["eval_bs32_init_cached"]["seconds"]
    out["speedup_post_fusion_alongside"] = (
        sum(r["seconds"] for r in out["post_fusion_one_by_one"]) / out["post_fusion_alongside_seconds"]
    )
    return out


def precision_one_thread(reps: int = 3) -> dict:
    """One client's local epoch (1,000 images, batch 32, channels_last) and the evaluation of 1,000 images, fp32
    against bf16 autocast, on one thread, interleaved; median seconds and the bf16/fp32 ratios. Whether bf16 pays
    depends on the CPU: native bf16 (AVX-512 BF16, AMX) or emulated."""
    from paper_repro.cliargs import native_bf16
    from paper_repro.training import predict_logits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = build_model("cnn", (1, 28, 28), 10, seed=0).to(memory_format=torch.channels_last)
        x, y = torch.randn(1000, 1, 28, 28), torch.randint(0, 10, (1000,))
        times = {f"{k}_{p}": [] for k in ("train", "eval") for p in ("fp32", "bf16")}
        for _ in range(reps + 1):  # the first repetition warms up
            for p in ("fp32", "bf16"):
                times[f"train_{p}"].append(
                    _timed(
                        lambda: local_train(
                            m, x, y, 1, LR, MOMENTUM, BATCH, torch.Generator().manual_seed(0), True, precision=p
                        )
                    )
                )
                times[f"eval_{p}"].append(_timed(lambda: predict_logits(m, x, 32, True, p)))
    finally:
        torch.set_num_threads(before)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    return {
        **med,
        "train_bf16_over_fp32": med["train_bf16"] / med["train_fp32"],
        "eval_bf16_over_fp32": med["eval_bf16"] / med["eval_fp32"],
        "native_bf16": native_bf16(),
    }


def jobs_side_by_side(n: int = 4) -> dict:
    """``n`` distinct quick runs (seeds 100…) one at a time with all threads vs two at a time in worker processes
    with one thread each (``run_many(jobs=2)``), afresh; throughput ratio and the largest ACC/ASR difference."""
    from paper_repro.profiles import load_config
    from paper_repro.runner import run_many

    cfgs = [load_config("quick", attack={"kind": k}, seed=100 + i) for i, k in enumerate(["fm", "classic"] * (n // 2))]
    out = {}
    for jobs in (1, 2):
        with _FreshRuns():
            t = time.perf_counter()
            res = run_many(cfgs, jobs=jobs, progress=False)
            out[f"jobs{jobs}_seconds"] = time.perf_counter() - t
            out[f"jobs{jobs}_final"] = [(float(r.final["acc"]), float(r.final["asr"])) for r in res]
    out["speedup_jobs2"] = out["jobs1_seconds"] / out["jobs2_seconds"]
    out["max_abs_diff_acc_asr"] = float(np.abs(np.array(out["jobs1_final"]) - np.array(out["jobs2_final"])).max())
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    parts = [
        "peak",
        "engines",
        "flops",
        "flower",
        "sampler",
        "overhead",
        "rss",
        "eval",
        "recompute",
        "jobs",
        "precision",
    ]
    p.add_argument("--parts", nargs="+", default=parts, choices=parts)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--merge", action="store_true", help="keep the other parts of the saved JSON")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/speed_<device>.json)")
    a = p.parse_args(argv)
    res = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": DEV.type,
        "workload": dict(num_clients=NUM_CLIENTS, per_round=PER_ROUND, epochs=EPOCHS, batch=BATCH),
    }
    clients, model = workload()
    if "peak" in a.parts:
        res["matmul_peak_gflops"] = matmul_peak()
    if "engines" in a.parts:
        res["engines_seconds_per_round"] = engines(clients, model, a.rounds)
    if "flops" in a.parts:
        res["client_gflop_per_round"] = client_flops(model, clients) / 1e9
    if "flower" in a.parts:
        res["flower"] = [flower(clients, model, a.rounds, c) for c in (1, 2)]
    standalone = {
        "sampler": ("sampler", sampler),
        "overhead": ("defense_overhead_quick", overheads),
        "rss": ("quick_main_job", peak_rss_main_job),
        "eval": ("eval_seconds_per_10k_images", eval_batches),
        "recompute": ("quick_run", recompute_parts),
        "jobs": ("jobs", jobs_side_by_side),
        "precision": ("precision_one_thread", precision_one_thread),
    }
    for part, (key, fn) in standalone.items():
        if part in a.parts:
            res[key] = fn()
    e = res.get("engines_seconds_per_round")
    if e:
        ours = min((k for k in e if k not in ("rounds", "research_loop")), key=e.get)
        res["ours"] = ours
        res["ratios"] = {f"{k} / ours({ours})": e[k] / e[ours] for k in e if k not in ("rounds", ours)}
        fl = [f for f in res.get("flower", []) if "seconds_per_round" in f]
        for f in fl:
            key = f"flower(num_cpus={f['num_cpus_per_actor']}) / ours({ours})"
            res["ratios"][key] = f["seconds_per_round"] / e[ours]
        if "client_gflop_per_round" in res and "matmul_peak_gflops" in res:
            res["achieved_fraction_of_peak"] = {
                k: res["client_gflop_per_round"] / v / res["matmul_peak_gflops"] for k, v in e.items() if k != "rounds"
            }
    OUT.mkdir(exist_ok=True)
    path = Path(a.out) if a.out else OUT / f"speed_{DEV.type}.json"
    if a.merge and path.exists():  # a subset of parts updates its entries of the last full run
        res = {**json.loads(path.read_text()), **res}
    path.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
