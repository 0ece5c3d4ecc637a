"""Training primitives on one model: supervised epochs, one client's local training, FedDF distillation, and
batched prediction; bf16 autocast and the channels_last memory format as options."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from .models import flat_state, load_flat_state, state_keys
from .precision import autocast


class LocalObjective:
    """A change to one client's local training, made by an attack (:meth:`paper_repro.attacks.Attack.local_objective`):
    :func:`train_supervised` calls :meth:`begin` once, then :meth:`gradients` after every backward pass (before the
    SGD step; edit ``p.grad`` in place: a projected or penalised gradient) and :meth:`project` after every step
    (edit the parameters in place: projection onto a constraint set). The base class changes nothing."""

    def begin(self, model: nn.Module) -> None:
        """Called once with the client's copy of the global model, before its first step."""

    def gradients(self, model: nn.Module) -> None:
        """Called after every backward pass, before the optimiser's step."""

    def project(self, model: nn.Module) -> None:
        """Called after every optimiser step."""


def flat_slices(model: nn.Module) -> dict[str, slice]:
    """Per parameter name, its slice in :func:`paper_repro.models.flat_state`'s vector (buffers are skipped but
    counted), so that a (P,) mask or target can be read per parameter."""
    sd, params, out, i = model.state_dict(), dict(model.named_parameters()), {}, 0
    for k in state_keys(model):
        n = sd[k].numel()
        if k in params:
            out[k] = slice(i, i + n)
        i += n
    return out


def as_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) in channels_last memory format when asked (same values; fast only when the model's
    weights are in that format too), anything else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _prep(model: nn.Module, x: torch.Tensor, channels_last: bool) -> tuple[nn.Module, torch.Tensor]:
    if channels_last and x.dim() == 4:
        return model.to(memory_format=torch.channels_last), as_format(x, True)
    return model, x


# ------------------------------------------------------------------------------------------------ training
def train_supervised(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    generator: torch.Generator,
    channels_last: bool = False,
    precision: str = "fp32",
    objective: LocalObjective | None = None,
) -> nn.Module:
    """Cross-entropy SGD on (x, y) for ``epochs``, batches in an order drawn from ``generator``; trains ``model``
    in place and returns it. A fresh optimiser per call (the author code re-creates it every round).
    ``precision="bf16"`` runs forward and backward under bf16 autocast (see :func:`autocast`). ``objective``: an
    attack's change to the steps (:class:`LocalObjective`), None for an honest client."""
    model, x = _prep(model, x, channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    if objective is not None:
        objective.begin(model)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            if not len(idx):  # a client without data does not move (instead of a NaN loss)
                continue
            with autocast(x.device.type, precision):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if objective is not None:
                objective.gradients(model)
            opt.step()
            if objective is not None:
                with torch.no_grad():
                    objective.project(model)
    return model


def local_train(
    global_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    generator: torch.Generator,
    channels_last: bool = False,
    context=None,
    precision: str = "fp32",
    objective: LocalObjective | None = None,
) -> torch.Tensor:
    """Step 2 for one client: copy the global model, train on the client's data, return its flat state (P,).
    ``context(model)``, if given, is a context manager active during training (e.g. activation bounds);
    ``objective``: a malicious client's change to its steps (:class:`LocalObjective`).

    Written per client on purpose: it is the reference that a batched engine must match.
    """
    model = copy.deepcopy(global_model)
    with context(model) if context is not None else contextlib.nullcontext():
        train_supervised(model, x, y, epochs, lr, momentum, batch_size, generator, channels_last, precision, objective)
    return flat_state(model)


def distill(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher_logits: torch.Tensor,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    alpha: float,
    temperature: float,
    generator: torch.Generator,
    channels_last: bool = False,
    precision: str = "fp32",
    context=None,
) -> nn.Module:
    """Step 4, FedDF fusion on the synthetic set: minimise α·τ²·KL(σ(t/τ) ‖ σ(s/τ)) + (1−α)·CE(s, y) with the
    student in train mode; teacher logits are matched per sample index (docs/paper.md, traps). [C: FRJ-AJ]
    ``precision="bf16"``: the student's forward and backward under bf16 autocast, the loss in fp32.
    ``context``: None, or a function student → context manager under which the student is distilled (a defense's
    bounds on its activations, say)."""
    student, x = _prep(student, x, channels_last)
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum)
    t_prob = F.softmax(teacher_logits / temperature, dim=1)
    with context(student) if context is not None else contextlib.nullcontext():
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=generator).split(batch_size):
                with autocast(x.device.type, precision):
                    s = student(x[idx]).float()
                kl = F.kl_div(F.log_softmax(s / temperature, dim=1), t_prob[idx], reduction="batchmean")
                loss = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return student


# ------------------------------------------------------------------------------------------------ evaluation
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1000, channels_last: bool = False, precision: str = "fp32"
) -> torch.Tensor:
    """Logits (N, C) in eval mode, ``batch_size`` images at a time. With ``channels_last`` the model and the images
    are put in that memory format first (as in training; a channels_last input to a contiguous model is slow).
    On CPU, batches of a few dozen images stay in cache and run ~2× faster than batches of 1,000
    (``benchmarks/speed.py`` part ``eval``). ``precision="bf16"``: the forward under bf16 autocast (fp32 logits)."""
    was_training = model.training
    model, x = _prep(model, x, channels_last)  # outside inference mode: it may replace the parameters' storage
    model.eval()
    with torch.inference_mode(), autocast(x.device.type, precision):
        out = [model(xb).float() for xb in x.split(batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, channels_last: bool = False
) -> float:
    """Fraction of (x, y) classified correctly (NaN on an empty set)."""
    if len(y) == 0:
        return float("nan")
    return (predict_logits(model, x, batch_size, channels_last).argmax(1) == y).float().mean().item()


def ensemble_logits(
    model: nn.Module,
    states: torch.Tensor,
    x: torch.Tensor,
    batch_size: int = 1000,
    channels_last: bool = False,
    precision: str = "fp32",
    context=None,
) -> torch.Tensor:
    """Mean logits (N, C) on ``x`` of the models whose flat states are the rows of ``states`` (K, P), built on a copy
    of ``model`` (which is not modified): the FedDF teacher ensemble. ``context``: None, or a function teacher →
    context manager under which each teacher predicts (a defense's bounds on its activations, say)."""
    tmp = copy.deepcopy(model)
    out = []
    for s in states:
        teacher = load_flat_state(tmp, s)
        with context(teacher) if context is not None else contextlib.nullcontext():
            out.append(predict_logits(teacher, x, batch_size, channels_last, precision))
    return torch.stack(out).mean(0)
