"""Step 6 and detection metrics: ACC on the clean test set, ASR on triggered non-target test images, and the
TPR/FPR of a defense that flags clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .data import ImageSet
from .training import predict_logits

if TYPE_CHECKING:
    import pandas as pd

METRICS = ("acc", "asr", "acc_triggered", "acc_client_mean")
"""What :func:`evaluate` reports (the last one only when it is given the clients' class shares)."""


def no_metrics() -> dict[str, float]:
    """Every metric NaN: the row of a round whose weights diverged."""
    return dict.fromkeys(METRICS, float("nan"))


def class_shares(label_sets: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(K, C) share of each class in each client's labels (a client without data gets a zero row)."""
    counts = np.stack(
        [np.bincount(np.asarray(y, np.int64), minlength=num_classes)[:num_classes] for y in label_sets]
    ).astype(np.float64)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def client_mean_accuracy(per_class_acc: np.ndarray, shares: np.ndarray) -> float:
    """The authors' ACC convention (docs/paper.md, "Metrics"): the mean over clients of the accuracy on a local test
    split drawn like the client's own data. Computed exactly in expectation as the mean over clients of
    Σ_c share_k(c)·acc_c, with acc_c the global model's accuracy on the clean test images of class c (classes absent
    from the test set count as 0 and never occur in a share here)."""
    rows = shares[shares.sum(1) > 0]
    return float((rows @ np.nan_to_num(per_class_acc)).mean()) if len(rows) else float("nan")


def evaluate(
    model: nn.Module,
    test: ImageSet,
    asr_test: ImageSet,
    target_class: int | np.ndarray,
    device: str = "cpu",
    batch_size: int = 1000,
    channels_last: bool = False,
    shares: np.ndarray | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """ACC on ``test``; ASR = share of ``asr_test`` (triggered images) classified as ``target_class`` (one class, or
    one per image for an all-to-all backdoor; an all-to-one ASR set excludes the target class, as in the author
    code); ``acc_triggered`` = share of the same
    triggered images classified as their true label (a defense that only breaks the trigger's effect without
    restoring the right answer scores low here); with ``shares`` (:func:`class_shares` of the clients),
    ``acc_client_mean`` = :func:`client_mean_accuracy`. ``precision="bf16"``: forwards under bf16 autocast."""
    x, y = test.tensors(device)
    xa, ya = asr_test.tensors(device)
    hit = (predict_logits(model, x, batch_size, channels_last, precision).argmax(1) == y) if len(y) else y.bool()
    acc = hit.float().mean().item() if len(y) else float("nan")
    pred = predict_logits(model, xa, batch_size, channels_last, precision).argmax(1)
    tgt = torch.as_tensor(np.asarray(target_class, np.int64), device=pred.device)  # one class, or one per image
    asr = (pred == tgt).float().mean().item() if len(pred) else float("nan")
    acc_t = (pred == ya).float().mean().item() if len(pred) else float("nan")
    out = {"acc": acc, "asr": asr, "acc_triggered": acc_t}
    if shares is not None:
        c = shares.shape[1]
        yn, hn = y.cpu().numpy(), hit.cpu().numpy()
        per_class = np.array([hn[yn == k].mean() if (yn == k).any() else np.nan for k in range(c)])
        out["acc_client_mean"] = client_mean_accuracy(per_class, shares)
    return out


def detection_rates(flagged: list[int], ids: np.ndarray, malicious: frozenset) -> dict[str, float]:
    """TPR = flagged malicious / sampled malicious, FPR = flagged benign / sampled benign (NaN when undefined)."""
    mal = [int(k) for k in ids if int(k) in malicious]
    ben = [int(k) for k in ids if int(k) not in malicious]
    f = set(flagged)
    return {
        "num_flagged": len(flagged),
        "tpr": sum(k in f for k in mal) / len(mal) if mal else float("nan"),
        "fpr": sum(k in f for k in ben) / len(ben) if ben else float("nan"),
    }


# ------------------------------------------------------------------------------------------------ one run's summary
LAST_K = 3
"""ASR is also reported averaged over the last ``LAST_K`` rounds: an all-or-nothing final round hides a backdoor
that comes and goes."""


def summarise(history: pd.DataFrame) -> dict:
    """Final ACC/ASR, the clients' mean ACC (authors' convention), accuracy on triggered images (true labels), ASR
    averaged over the last ``LAST_K`` rounds, ASR after round 0 (initialisation on the synthetic set: where an FM
    attack enters), the attackers per round (mean and most, over the rounds that record them), mean TPR/FPR over
    rounds, and the defense's share of a round's time."""
    rounds = history[history["round"] > 0]
    last = history.iloc[-1]
    first = history[history["round"] == 0]
    per_round = rounds["num_attackers"].dropna() if "num_attackers" in rounds else rounds["round"].iloc[:0]
    return {
        "acc": last["acc"],
        "asr": last["asr"],
        "asr_last_k": rounds["asr"].tail(LAST_K).mean(),
        "asr_round0": float(first["asr"].iloc[0]) if len(first) else float("nan"),
        "attackers_mean": float(per_round.mean()) if len(per_round) else float("nan"),
        "attackers_max": float(per_round.max()) if len(per_round) else float("nan"),
        "acc_triggered": last.get("acc_triggered", float("nan")),
        "acc_client_mean": last.get("acc_client_mean", float("nan")),
        "status": last.get("status", "ok"),
        "tpr": rounds["tpr"].mean(),
        "fpr": rounds["fpr"].mean(),
        "defense_seconds": rounds["defense_seconds"].mean(),
        "round_seconds": rounds["round_seconds"].mean(),
        "overhead": rounds["defense_seconds"].mean() / rounds["round_seconds"].mean(),
    }
