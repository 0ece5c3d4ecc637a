"""Step 6 and detection metrics: ACC on the clean test set, ASR on triggered non-target test images, and the
TPR/FPR of a defense that flags clients."""
from __future__ import annotations

import numpy as np
from torch import nn

from .data import ImageSet
from .training import accuracy, predict_logits


def evaluate(model: nn.Module, test: ImageSet, asr_test: ImageSet, target_class: int, device: str = "cpu",
             batch_size: int = 1000, channels_last: bool = False) -> dict[str, float]:
    """ACC on ``test``; ASR = share of ``asr_test`` (triggered non-target images) classified as ``target_class``
    (the target class is excluded from the ASR set, as in the author code); ``acc_triggered`` = share of the same
    triggered images classified as their true label (a defense that only breaks the trigger's effect without
    restoring the right answer scores low here)."""
    x, y = test.tensors(device)
    xa, ya = asr_test.tensors(device)
    acc = accuracy(model, x, y, batch_size, channels_last)
    pred = predict_logits(model, xa, batch_size, channels_last).argmax(1)
    asr = (pred == target_class).float().mean().item() if len(pred) else float("nan")
    acc_t = (pred == ya).float().mean().item() if len(pred) else float("nan")
    return {"acc": acc, "asr": asr, "acc_triggered": acc_t}


def detection_rates(flagged: list[int], ids: np.ndarray, malicious: frozenset) -> dict[str, float]:
    """TPR = flagged malicious / sampled malicious, FPR = flagged benign / sampled benign (NaN when undefined)."""
    mal = [int(k) for k in ids if int(k) in malicious]
    ben = [int(k) for k in ids if int(k) not in malicious]
    f = set(flagged)
    return {"num_flagged": len(flagged),
            "tpr": sum(k in f for k in mal) / len(mal) if mal else float("nan"),
            "fpr": sum(k in f for k in ben) / len(ben) if ben else float("nan")}

