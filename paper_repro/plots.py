"""One function per figure kind; plots read DataFrames/ImageSets only and return the matplotlib Figure."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data import ImageSet

ATTACK_LABELS = {"none": "no attack", "classic": "classic (malicious clients)", "fm": "FM attack (poisoned synthetic)",
                 "both": "classic + FM"}


def sample_grid(data: ImageSet, n_per_class: int = 8, title: str = "", highlight: np.ndarray | None = None,
                seed: int = 0):
    """Rows = classes, columns = ``n_per_class`` random images of that class; ``highlight`` indices framed red."""
    rng = np.random.default_rng(seed)
    hl = set(np.asarray(highlight).tolist()) if highlight is not None else set()
    fig, axes = plt.subplots(data.num_classes, n_per_class, figsize=(n_per_class * 0.8, data.num_classes * 0.85))
    for c in range(data.num_classes):
        idx = np.flatnonzero(data.y == c)
        pick = rng.choice(idx, size=min(n_per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(n_per_class):
            ax = axes[c, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(pick):
                img = data.x[pick[j]]
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
                if int(pick[j]) in hl:
                    for s in ax.spines.values():
                        s.set_color("red"), s.set_linewidth(2)
            if j == 0:
                ax.set_ylabel(data.classes[c], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def rounds(history: pd.DataFrame, hue: str = "attack", title: str = "", labels: dict | None = None):
    """ACC (left) and ASR (right) of the global model per round, one line per ``hue`` value, mean ± std over
    seeds when several are present."""
    labels = labels or ATTACK_LABELS
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for key, g in history.groupby(hue, sort=False):
        stats = g.groupby("round")[["acc", "asr"]].agg(["mean", "std"])
        for ax, m in zip(axes, ("acc", "asr")):
            mu, sd = stats[(m, "mean")], stats[(m, "std")].fillna(0)
            ax.plot(stats.index, mu, marker="o", ms=3, label=labels.get(key, key))
            ax.fill_between(stats.index, mu - sd, mu + sd, alpha=0.2)
    for ax, name in zip(axes, ("ACC: clean test accuracy", "ASR: triggered non-target → target")):
        ax.set_xlabel("FL round (0 = after synthetic initialisation)")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def savefig(fig, path: str | Path, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``path``.png/.pdf (an image suffix on ``path`` is dropped); returns the files written."""
    path = Path(path)
    if path.suffix.lstrip(".") in ("png", "pdf", "svg", "jpg"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for f in formats:
        p = path.parent / f"{path.name}.{f}"  # not with_suffix: names may hold dots (dirichlet0.5)
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        out.append(p)
    return out


def defense_heatmap(table: pd.DataFrame, title: str = ""):
    """Heatmaps of final ACC (left) and ASR (right): rows = defenses, columns = attacks; ``table`` as returned by
    ``paper_repro.grid.pivot`` (columns (metric, attack)). Cell text = the value."""
    metrics = [m for m in ("acc", "asr") if m in table.columns.get_level_values(0)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.32 * len(table) + 1.6))
    axes = np.atleast_1d(axes)
    for ax, m, cmap in zip(axes, metrics, ("Greens", "Reds")):
        sub = table[m]
        im = ax.imshow(sub.values.astype(float), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(sub.shape[1]), [ATTACK_LABELS.get(a, a).split(" (")[0] for a in sub.columns],
                      fontsize=8)
        ax.set_yticks(range(sub.shape[0]), sub.index, fontsize=8)
        for i in range(sub.shape[0]):
            for j in range(sub.shape[1]):
                v = sub.values[i, j]
                ax.text(j, i, "–" if pd.isna(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if (not pd.isna(v) and v > 0.6) else "black")
        ax.set_title({"acc": "final ACC (clean test)", "asr": "final ASR (triggered → target)"}[m], fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
