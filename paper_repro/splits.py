"""A run's data: the dataset a config names (the plain ones from :mod:`paper_repro.data`, and the textured
Fashion-MNIST made here from :mod:`paper_repro.backgrounds`), split into the server's public split, the client pool
and the test set, and the half of the test set the run measures on (``data.test_half``).

It lives outside :mod:`paper_repro.data` on purpose: the FM sampler's code digest covers ``data`` (and with it the
key of every shipped synthetic set), and what a run evaluates on is not the sampler's business."""

from __future__ import annotations

import numpy as np

from .data import ImageSet, Splits, load_dataset, split_public

DERIVED = ("fashion_mnist_textured",)
"""Datasets made from another one here, not loaded by :func:`paper_repro.data.load_dataset`."""


def load_run_dataset(name: str) -> tuple[ImageSet, ImageSet]:
    """(train, test) of any dataset a config may name. ``fashion_mnist_textured``: every Fashion-MNIST image over
    its own grey photo crop (train crops from seed 1, test crops from seed 2; the photos ship with scikit-learn)."""
    if name == "fashion_mnist_textured":
        from .backgrounds import textured

        train, test = load_dataset("fashion_mnist")
        return textured(train, seed=1), textured(test, seed=2)
    return load_dataset(name)


def test_half(test: ImageSet, half: str) -> ImageSet:
    """The test images of even (``"even"``) or odd (``"odd"``) position, or all of them (``"all"``)."""
    if half == "all":
        return test
    if half not in ("even", "odd"):
        raise ValueError(f"test half {half!r}; choose all, even or odd")
    idx = np.arange(len(test))
    return test.subset(idx[idx % 2 == (0 if half == "even" else 1)])


def run_splits(cfg) -> Splits:
    """A config's dataset split into public split, client pool and test set by ``cfg.data.split_seed`` (as
    :func:`paper_repro.data.public_splits`), then the test half the run measures on."""
    d = cfg.data
    train, test = load_run_dataset(d.dataset)
    s = split_public(train, test, d.public_size, d.client_size, d.test_size, seed=d.split_seed)
    return Splits(s.public, s.clients, test_half(s.test, d.test_half))
