"""Backgrounds for the defense study (docs/protocol.md, "The defense study"): how often a trigger's region holds
something other than black background in real images, and a textured-background variant of Fashion-MNIST made
offline (garments composited over crops of the two natural photographs that ship with scikit-learn, as MNIST-M
composites MNIST over natural patches).

Deterministic given a seed; nothing is downloaded."""

from __future__ import annotations

import numpy as np

from .data import ImageSet

BRIGHT = 50
"""A pixel above this (of 255) is not background, for :func:`region_busy_share`."""
GARMENT = 20
"""Compositing: a garment pixel brighter than this is kept; darker ones (its black background) show the photo."""


def region_busy_share(x: np.ndarray, rows: slice, cols: slice, bright: int = BRIGHT) -> float:
    """Share of images (N, C, H, W uint8) with a pixel above ``bright`` inside ``rows`` × ``cols``: how often a
    trigger placed there overlaps something other than constant black background."""
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {x.shape}")
    return float((x[:, :, rows, cols] > bright).reshape(len(x), -1).any(1).mean())


def photo_bank(scale: int = 4) -> list[np.ndarray]:
    """The scikit-learn sample photographs (china, flower) in grey (ITU-R 601 luma), shrunk ``scale``× by block
    means so that a 28-pixel crop holds texture rather than one smooth patch."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        grey = img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        h, w = (grey.shape[0] // scale) * scale, (grey.shape[1] // scale) * scale
        out.append(grey[:h, :w].reshape(h // scale, scale, w // scale, scale).mean((1, 3)))
    return out


def photo_crops(n: int, size: int, rng: np.random.Generator, bank: list[np.ndarray] | None = None) -> np.ndarray:
    """(n, size, size) uint8 crops at uniform positions of photos drawn uniformly from ``bank``."""
    bank = photo_bank() if bank is None else bank
    which = rng.integers(0, len(bank), n)
    out = np.empty((n, size, size), dtype=np.uint8)
    for i, b in enumerate(which):
        img = bank[b]
        r, c = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        out[i] = np.clip(np.rint(img[r : r + size, c : c + size]), 0, 255).astype(np.uint8)
    return out


def composite(x: np.ndarray, crops: np.ndarray, garment: int = GARMENT) -> np.ndarray:
    """Garments (N, 1, H, W uint8) over ``crops`` (N, H, W): a pixel is the garment's where it is brighter than
    ``garment``, the photo's elsewhere. Returns a new array (``x`` is not changed)."""
    if x.shape[1] != 1 or crops.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"need grey images (N, 1, H, W) and crops (N, H, W); got {x.shape} and {crops.shape}")
    return np.where(x > garment, x, crops[:, None]).astype(np.uint8)


def textured(data: ImageSet, seed: int) -> ImageSet:
    """``data`` with every image composited over its own photo crop (drawn from ``seed``); labels unchanged."""
    rng = np.random.default_rng(seed)
    return data.with_arrays(x=composite(data.x, photo_crops(len(data), data.x.shape[-1], rng)))
