"""FM quality as the paper-agnostic 'classifier score': accuracy that a classifier trained on real data reaches on
the synthetic images (1.0 = every synthetic image looks like its class to a real-data model)."""

from __future__ import annotations

import numpy as np

from ..data import ImageSet
from ..models import build_model
from ..rng import derive_seed, torch_gen
from ..training import accuracy, predict_logits, train_supervised


def synthetic_accuracy(
    synthetic: ImageSet, real_train: ImageSet, real_test: ImageSet, epochs: int = 3, model: str = "cnn", seed: int = 0
) -> dict:
    """Train ``model`` on ``real_train``; report its accuracy on ``real_test`` (sanity) and on ``synthetic``,
    overall and per class."""
    net = build_model(model, real_train.shape, real_train.num_classes, derive_seed(seed, "fm_quality"))
    x, y = real_train.tensors()
    train_supervised(net, x, y, epochs, lr=0.05, momentum=0.9, batch_size=64, generator=torch_gen(seed, "fmq"))
    xs, ys = synthetic.tensors()
    pred = predict_logits(net, xs).argmax(1).numpy()
    per_class = [float(np.mean(pred[synthetic.y == c] == c)) for c in range(synthetic.num_classes)]
    return {
        "real_test_acc": accuracy(net, *real_test.tensors()),
        "synthetic_acc": float(np.mean(pred == synthetic.y)),
        "per_class": dict(zip(synthetic.classes, per_class)),
    }
