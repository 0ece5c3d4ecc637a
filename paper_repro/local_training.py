"""Step 2 engines, the local training of a round's clients: one after another (the reference loop), side by side on
threads (the CPU default: each client on one thread, so its numbers do not depend on the core count), or
batched as one computation.

Batched: ``torch.func.vmap`` over a stacked copy of the parameters (one slice per client) turns each convolution into a
grouped one and each matrix product into a batched one; every client keeps its own data order (its generator draws
the same permutations as in :func:`paper_repro.training.local_train`), its own SGD momentum buffer and its own
number of steps (clients whose data ran out are masked, not updated). Batches are padded to ``batch_size`` with
zero-weight samples so that the loss of a short last batch is the mean over its real samples, as in the loop.

The plain per-client loop (:func:`paper_repro.training.local_train`) stays the reference implementation; this engine
must match it (``tests/test_local_training.py``) and falls back to it for models it cannot batch (BatchNorm, whose
running statistics are per-client state updated in place). :func:`threaded_local_train` is the CPU counterpart:
the same loop, several clients at once on one thread each.
"""

from __future__ import annotations

import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .models import flat_state, state_keys
from .precision import autocast
from .training import local_train


def threaded_local_train(
    global_model: nn.Module,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    generators: list[torch.Generator],
    channels_last: bool = False,
    context=None,
    precision: str = "fp32",
    workers: int | None = None,
    objectives: list | None = None,
) -> torch.Tensor:
    """Step 2 for K clients, ``workers`` of them at a time (default: torch's intra-op thread count), each on one
    thread: the per-client loop of :func:`paper_repro.training.local_train`, run side by side the way Flower's actors
    run, but in one process. Small convolutions (batch 32 of 28×28) do not keep two intra-op threads busy, two
    clients do. Every client is computed on exactly one thread, so its numbers do not depend on how many cores the
    machine has or how many clients run at once (``tests/test_local_training.py``); they equal the loop run on one
    thread bit for bit, and the loop on several threads up to float rounding. ``workers=1`` is the reference loop
    itself (one client after another on torch's intra-op threads). torch's intra-op thread count is set to 1 for the
    duration and restored afterwards. ``objectives``: per client, an attack's change to its local steps
    (:class:`paper_repro.training.LocalObjective`) or None."""
    if len(data) != len(generators):
        raise ValueError(f"{len(data)} clients but {len(generators)} generators")
    objectives = _objectives(objectives, len(data))

    def one(i: int) -> torch.Tensor:
        (x, y), g = data[i], generators[i]
        return local_train(
            global_model, x, y, epochs, lr, momentum, batch_size, g, channels_last, context, precision, objectives[i]
        )

    if workers == 1:
        return torch.stack([one(i) for i in range(len(data))])
    threads = torch.get_num_threads()
    workers = max(1, min(workers or threads, len(data)))
    torch.set_num_threads(1)
    try:
        if workers == 1:
            return torch.stack([one(i) for i in range(len(data))])
        with ThreadPoolExecutor(workers) as pool:
            return torch.stack(list(pool.map(one, range(len(data)))))
    finally:
        torch.set_num_threads(threads)


def train_clients(
    engine: str, device: str, global_model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], *args, **kwargs
) -> torch.Tensor:
    """Step 2 with the run's engine (:attr:`paper_repro.options.RunOptions.engine`): ``loop`` (one client after
    another), ``threads``, ``batched``, or ``auto`` (batched on a GPU, threads elsewhere). Arguments after ``data``
    as in :func:`batched_local_train`."""
    if engine == "batched" or (engine == "auto" and str(device).startswith("cuda")):
        return batched_local_train(global_model, data, *args, **kwargs)
    workers = 1 if engine == "loop" else None  # one worker: local_train per client in turn, the reference loop
    return threaded_local_train(global_model, data, *args, workers=workers, **kwargs)


def _objectives(objectives: list | None, k: int) -> list:
    if objectives is None:
        return [None] * k
    if len(objectives) != k:
        raise ValueError(f"{k} clients but {len(objectives)} local objectives")
    return list(objectives)


def can_batch(model: nn.Module) -> bool:
    """True when the model has no buffers (e.g. no BatchNorm), so clients differ only in their parameters."""
    return not any(True for _ in model.buffers())


def _schedules(sizes: list[int], epochs: int, batch_size: int, generators: list[torch.Generator]):
    """Per client, the list of its index batches over all epochs, drawn exactly as the reference loop draws them."""
    out = []
    for n, g in zip(sizes, generators):
        steps = []
        for _ in range(epochs):
            steps.extend(b for b in torch.randperm(n, generator=g).split(batch_size) if len(b))
        out.append(steps)
    return out


def batched_local_train(
    global_model: nn.Module,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    generators: list[torch.Generator],
    channels_last: bool = False,
    context=None,
    precision: str = "fp32",
    objectives: list | None = None,
) -> torch.Tensor:
    """Step 2 for K clients at once: returns their flat states (K, P), row k = client k trained from
    ``global_model`` on ``data[k]`` with ``generators[k]``. Same semantics as K calls of
    :func:`paper_repro.training.local_train` (SGD with momentum, fresh optimiser, mean cross-entropy per batch).
    ``channels_last`` only matters for the fallback loop (under vmap the batched kernels choose the layout);
    ``precision="bf16"`` computes the gradients under bf16 autocast (the SGD update stays fp32)."""
    if len(data) != len(generators):
        raise ValueError(f"{len(data)} clients but {len(generators)} generators")
    objectives = _objectives(objectives, len(data))
    if not can_batch(global_model) or any(o is not None for o in objectives):
        # BatchNorm, or a client whose steps an attack changes: those clients through the reference loop
        loop = [i for i, o in enumerate(objectives) if o is not None or not can_batch(global_model)]
        rest = [i for i in range(len(data)) if i not in loop]
        out = [None] * len(data)
        for i in loop:
            (x, y), g = data[i], generators[i]
            args = (epochs, lr, momentum, batch_size, g, channels_last, context, precision, objectives[i])
            out[i] = local_train(global_model, x, y, *args)
        if rest:
            batched = batched_local_train(
                global_model,
                [data[i] for i in rest],
                epochs,
                lr,
                momentum,
                batch_size,
                [generators[i] for i in rest],
                channels_last,
                context,
                precision,
            )
            for j, i in enumerate(rest):
                out[i] = batched[j]
        return torch.stack(out)
    k_clients = len(data)
    model = copy.deepcopy(global_model).train()
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach().unsqueeze(0).repeat(k_clients, *([1] * p.dim())) for n, p in model.named_parameters()}
    bufs = {n: torch.zeros_like(p) for n, p in params.items()}
    sched = _schedules([len(x) for x, _ in data], epochs, batch_size, generators)
    num_steps = max((len(s) for s in sched), default=0)

    def loss(p: dict, xb: torch.Tensor, yb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xb,))
        return (F.cross_entropy(out, yb, reduction="none") * w).sum() / w.sum().clamp_min(1.0)

    grads_fn = vmap(grad(loss))
    template = next((x for x, _ in data if len(x)), None)
    if template is None:  # nobody has data: nobody moves
        return torch.stack([flat_state(global_model)] * k_clients)
    zero_x = torch.zeros((batch_size, *template.shape[1:]), dtype=template.dtype)
    zero_y, zero_w = torch.zeros(batch_size, dtype=torch.long), torch.zeros(batch_size)
    with context(model) if context is not None else contextlib.nullcontext():
        for s in range(num_steps):
            xs, ys, ws, active = [], [], [], []
            for (x, y), steps in zip(data, sched):
                if s >= len(steps):  # this client's data ran out (or it has none): compute on zeros, update nothing
                    xs.append(zero_x), ys.append(zero_y), ws.append(zero_w), active.append(False)
                    continue
                idx, n = steps[s], len(steps[s])
                if n < batch_size:  # short last batch: pad with zero-weight copies of its first sample
                    idx = torch.cat([idx, idx[:1].expand(batch_size - n)])
                xs.append(x[idx]), ys.append(y[idx]), active.append(True)
                ws.append(torch.cat([torch.ones(n), torch.zeros(batch_size - n)]))
            with autocast(template.device.type, precision):
                g = grads_fn(params, torch.stack(xs), torch.stack(ys), torch.stack(ws))
            a = torch.tensor(active)
            with torch.no_grad():
                for n in names:  # torch.optim.SGD (dampening 0): buf = m·buf + g (buf starts at 0), p -= lr·buf
                    mask = a.view(-1, *([1] * (params[n].dim() - 1)))
                    bufs[n] = torch.where(mask, momentum * bufs[n] + g[n], bufs[n])
                    params[n] = params[n] - lr * mask * bufs[n]
    keys = state_keys(model)
    return torch.cat([params[k].reshape(k_clients, -1).float() for k in keys], dim=1)
