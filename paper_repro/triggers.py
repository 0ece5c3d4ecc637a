"""Backdoor triggers as pure functions on uint8 (N, C, H, W) images, and the FM poisoning step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import ImageSet


@dataclass(frozen=True)
class Trigger:
    """A trigger: ``apply(x)`` returns triggered copies of uint8 images (N, C, H, W); never modifies ``x``."""

    kind: str = "badnets"
    size: int = 3
    """Side of the square (badnets, random_patch); length − 1 of each DBA bar (dba)."""
    alpha: float = 0.2
    """Blend weight (blend) or amplitude as a share of the pixel range (sig)."""
    seed: int = 0
    part: int = -1
    """dba only: which of the four local patterns (0–3), or −1 for the global trigger, their union."""
    position: str = "corner"
    """badnets only: where the square sits (:data:`POSITIONS`)."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "badnets":
            return badnets_patch(x, self.size, position=self.position)
        if self.kind == "blend":
            return blend(x, blend_pattern(x.shape[1:], self.seed), self.alpha)
        if self.kind == "random_patch":
            return random_patch(x, self.size, np.random.default_rng(self.seed))
        if self.kind == "sig":
            return sig(x, self.alpha)
        if self.kind == "dba":
            return dba(x, self.size + 1, self.part)
        raise ValueError(f"unknown trigger {self.kind!r}; choose one of {list(KINDS)}")


KINDS = ("badnets", "blend", "random_patch", "sig", "dba")
POSITIONS = ("corner", "centre", "garment")
"""Where a BadNets square sits: the bottom-right corner (the papers'; black background in 90 % of Fashion-MNIST),
the image centre, or the upper middle (rows 8–10 of 28, on the torso of most garments) — the defense study's
placements (docs/protocol.md)."""


def patch_origin(h: int, w: int, size: int, position: str = "corner") -> tuple[int, int]:
    """Top-left pixel of a ``size``×``size`` square at ``position`` in an h×w image."""
    if position == "corner":
        return h - size, w - size
    if position == "centre":
        return h // 2 - size // 2, w // 2 - size // 2
    if position == "garment":
        return round(8 * h / 28), w // 2 - size // 2
    raise ValueError(f"unknown trigger position {position!r}; choose one of {list(POSITIONS)}")


def badnets_patch(x: np.ndarray, size: int = 3, value: int = 255, position: str = "corner") -> np.ndarray:
    """White ``size``×``size`` square, by default in the bottom-right corner, on uint8 before normalisation.
    [C: PAKDD paper; FRJ-AJ `[-3:, -3:, :] = 255`; other positions: ours]"""
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"trigger size {size} is larger than the {h}×{w} image")
    top, left = patch_origin(h, w, size, position)
    out = np.array(x, dtype=np.uint8, copy=True)
    out[..., top : top + size, left : left + size] = value
    return out


def random_patch(x: np.ndarray, size: int, rng: np.random.Generator, value: int = 255) -> np.ndarray:
    """A white ``size``×``size`` square at a random position, drawn per image from ``rng`` (the same ``rng`` state
    gives the same positions). A trigger that a bound on a few fixed positions cannot single out.
    [C: random-location patches as in Saha et al. 2020 / Xie et al. DBA; R: white square, uniform position]"""
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"trigger size {size} is larger than the {h}×{w} image")
    out = np.array(x, dtype=np.uint8, copy=True)
    rows = rng.integers(0, h - size + 1, size=len(x))
    cols = rng.integers(0, w - size + 1, size=len(x))
    for i, (r, c) in enumerate(zip(rows, cols)):
        out[i, ..., r : r + size, c : c + size] = value
    return out


def sig(x: np.ndarray, amplitude: float = 20 / 255, frequency: int = 6) -> np.ndarray:
    """SIG (Barni et al. 2019): a horizontal sinusoid over the whole image, x + Δ·sin(2π·j·f/W), with Δ a share of
    the pixel range (20/255 and f = 6 in the paper). A full-image, low-amplitude trigger."""
    w = x.shape[-1]
    wave = amplitude * 255 * np.sin(2 * np.pi * np.arange(w) * frequency / w)
    return np.clip(np.rint(x.astype(np.float32) + wave.astype(np.float32)), 0, 255).astype(np.uint8)


def dba(x: np.ndarray, length: int = 4, part: int = -1, value: int = 255) -> np.ndarray:
    """DBA's distributed trigger (Xie et al., ICLR 2020, MNIST setting): four white 1×``length`` bars near the top-left
    corner, two per row, rows 2 apart, bars ``length`` + 2 apart; ``part`` k in 0–3 draws bar k only (a malicious
    client's local trigger), −1 all four (the global trigger the attack is evaluated with). [C: 4 local triggers of
    1×4 pixels, gap 2, top-left]"""
    h, w = x.shape[-2:]
    if 2 * length + 3 > w or h < 4:
        raise ValueError(f"DBA bars of length {length} do not fit the {h}×{w} image")
    out = np.array(x, dtype=np.uint8, copy=True)
    for k in range(4) if part < 0 else [part]:
        r, c = 1 + 2 * (k // 2), 1 + (length + 2) * (k % 2)
        out[..., r, c : c + length] = value
    return out


def blend_pattern(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A fixed uniform-noise pattern (C, H, W) for the blended trigger. [C: Chen et al. 2017, 'Hello Kitty' or
    random noise]"""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def blend(x: np.ndarray, pattern: np.ndarray, alpha: float = 0.2) -> np.ndarray:
    """(1 − α)·x + α·pattern, rounded to uint8."""
    out = (1 - alpha) * x.astype(np.float32) + alpha * pattern.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def backdoor_labels(y: np.ndarray, target: int, mapping: str, num_classes: int) -> np.ndarray:
    """The label the attacker wants for a triggered image of true label ``y``: ``target`` (all_to_one) or
    y + 1 mod ``num_classes`` (all_to_all, Gu et al. 2017)."""
    y = np.asarray(y, np.int64)
    if mapping == "all_to_one":
        return np.full_like(y, target)
    if mapping == "all_to_all":
        return (y + 1) % num_classes
    raise ValueError(f"mapping={mapping!r}; choose all_to_one or all_to_all")


def poison(
    data: ImageSet, trigger: Trigger, target: int, ratio: float, rng: np.random.Generator, mapping: str = "all_to_one"
) -> tuple[ImageSet, np.ndarray]:
    """Trigger and relabel (:func:`backdoor_labels`) a fraction ``ratio`` of **each non-target class** (every class
    for all_to_all; rounded down), in place of the originals (set size unchanged). Returns the new set and the sorted
    poisoned indices; ``data`` is not touched. [C: 2401.10375 ρ per non-target class; R: replace, not append]"""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio {ratio} is outside [0, 1]")
    if not 0 <= target < data.num_classes:
        raise ValueError(f"target class {target} is not in 0..{data.num_classes - 1}")
    chosen = []
    for c in range(data.num_classes):
        if c == target and mapping == "all_to_one":
            continue
        idx = np.flatnonzero(data.y == c)
        chosen.append(rng.choice(idx, size=int(ratio * len(idx)), replace=False))
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return poison_indices(data, trigger, target, idx, mapping), idx


def poison_indices(
    data: ImageSet, trigger: Trigger, target: int, idx: np.ndarray, mapping: str = "all_to_one"
) -> ImageSet:
    """A copy of ``data`` with ``idx`` triggered and relabelled (:func:`backdoor_labels`)."""
    x, y = data.x.copy(), data.y.copy()
    if len(idx):
        x[idx] = trigger.apply(data.x[idx])
        y[idx] = backdoor_labels(data.y[idx], target, mapping, data.num_classes)
    return data.with_arrays(x, y)


def asr_set(test: ImageSet, trigger: Trigger, target: int, mapping: str = "all_to_one") -> ImageSet:
    """The ASR test set: every non-target test image (every image for all_to_all) with the trigger, labels kept
    (true labels). [C: author code excludes the target class]"""
    keep = np.flatnonzero(test.y != target) if mapping == "all_to_one" else np.arange(len(test))
    triggered = trigger.apply(test.x[keep])
    check_changes(test.x[keep], triggered, "ASR test images")
    return test.subset(keep).with_arrays(x=triggered)


def check_changes(before: np.ndarray, after: np.ndarray, what: str) -> None:
    """Raise ValueError when a trigger changed no pixel of any of the images ``before`` (it became ``after``): an
    ASR measured with it, or a poison made with it, would measure or plant nothing (a zero-strength SIG or blend, an
    unoptimised pattern)."""
    if len(before) and np.array_equal(before, after):
        raise ValueError(
            f"the trigger changes no pixel of the {len(before)} {what}: nothing would be planted or measured; give "
            "it a strength above 0 (attack.blend_alpha, attack.trigger_size, the attack's own parameters)"
        )
