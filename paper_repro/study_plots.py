"""Figures of the studies (F8d, F8e, F9): the attack calibration ladders, the calibrated attacks seed by seed and the
defense study's paired seeds, in the style of :mod:`paper_repro.plots` (no torch)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plots import styled


def _ordered(present, order: list | None) -> list:
    """``present`` values in ``order`` first, the rest as they come."""
    present = list(dict.fromkeys(present))
    return [a for a in (order or []) if a in present] + [a for a in present if a not in (order or [])]


def _panels(n: int, width: float, height: float):
    """A grid of ``n`` panels, at most four a row, sharing the ASR axis."""
    cols = min(4, max(1, n))
    rows_n = -(-max(1, n) // cols)
    return plt.subplots(rows_n, cols, figsize=(width * cols, height * rows_n), squeeze=False, sharey=True)


def _finish(fig, axes, n: int, ylabel: str, title: str):
    """Blank the unused panels, label each row's ASR axis, title and lay out."""
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def calibration_ladders(df: pd.DataFrame, target: float = 0.8, title: str = "", order: list | None = None):
    """F8d: one panel per attack (in ``order``, else as they come), its ladder's rungs in order on x; final ASR per
    seed (points), their mean (line) and the round-0 ASR mean (dashed), against the rule's target (grey). ``df``:
    the calibration table (attack, step, rung, seed, asr, asr_round0)."""
    names = _ordered(df["attack"], order)
    fig, axes = _panels(len(names), 3.3, 2.7)
    for ax, name in zip(axes.flat, names):
        sub = df[df["attack"] == name].sort_values("step")
        order = list(dict.fromkeys(sub["rung"]))
        x = sub["rung"].map(order.index)
        ax.scatter(x, sub["asr"], s=12, color="C0", alpha=0.6, label="final ASR, per seed")
        mean = sub.groupby("step", sort=True)[["asr", "asr_round0"]].mean()
        ax.plot(range(len(mean)), mean["asr"], color="C0", marker="o", ms=4, label="mean final ASR")
        ax.plot(range(len(mean)), mean["asr_round0"], color="C1", ls="--", marker="x", ms=4, label="mean round-0 ASR")
        ax.axhline(target, color="0.5", lw=0.8)
        ax.set_xticks(range(len(order)), [o.replace(", ", ",\n") for o in order], fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].legend(fontsize=6, loc="center left")
    return _finish(fig, axes, len(names), "ASR, no defense", title)


@styled
def calibrated_seeds(
    df: pd.DataFrame, order: list | None = None, weak: set | None = None, target: float = 0.8, title: str = ""
):
    """F8e: one panel per calibrated attack (in ``order``), defenses on x (no defense first); final ASR per held-out
    seed (points) and their mean (bar), against the calibration's target (grey) and the "stops" line at 0.10
    (dotted). Attacks in ``weak`` say so in their title. ``df``: the attack_calibrated table (attack, defense, seed,
    asr)."""
    names = _ordered(df["attack"], order)
    defenses = ["none"] + [d for d in dict.fromkeys(df["defense"]) if d != "none"]
    fig, axes = _panels(len(names), 3.4, 2.8)
    for ax, name in zip(axes.flat, names):
        sub = df[df["attack"] == name]
        here = [d for d in defenses if d in set(sub["defense"])]
        means = sub.groupby("defense")["asr"].mean().reindex(here)
        ax.bar(range(len(here)), means.values, color="C0", alpha=0.25, width=0.7, label="mean")
        for i, d in enumerate(here):
            v = sub.loc[sub["defense"] == d, "asr"].to_numpy()
            jitter = np.linspace(-0.18, 0.18, len(v)) if len(v) > 1 else np.zeros(1)
            ax.scatter(i + jitter, v, s=10, color="C0", zorder=3, label="per seed" if i == 0 else None)
        ax.axhline(target, color="0.5", lw=0.8)
        ax.axhline(0.10, color="0.3", lw=0.8, ls=":")
        ax.set_xticks(range(len(here)), here, rotation=45, ha="right", fontsize=6)
        ax.set_title(name + (" (weak)" if weak and name in weak else ""), fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].legend(fontsize=6, loc="upper right")
    return _finish(fig, axes, len(names), "final ASR", title)


@styled
def paired_seeds(
    df: pd.DataFrame, panels: list[str], defenses: list[str], panel_col: str = "setting", busy: dict | None = None,
    title: str = "",
):  # fmt: skip
    """F9: one panel per ``panels`` value (rows of ``df[panel_col]``), ``defenses`` on x in that order; each seed's
    final ASR as a point, the points of one seed joined by a line (the comparisons are paired: post-fusion defenses
    share the seed's training), the mean as a black bar; the 0.10 line dotted. ``busy`` (panel → share of real test
    images with something other than background in the trigger's region) goes under each panel's title."""
    names = [p for p in panels if p in set(df[panel_col])]
    fig, axes = _panels(len(names), 3.2, 3.0)
    for ax, name in zip(axes.flat, names):
        sub = df[df[panel_col] == name]
        here = [d for d in defenses if d in set(sub["defense"])]
        wide = sub.pivot_table(index="seed", columns="defense", values="asr").reindex(columns=here)
        for _, seed_row in wide.iterrows():
            ax.plot(range(len(here)), seed_row.values, color="C0", alpha=0.35, lw=0.8, marker="o", ms=3)
        ax.scatter(range(len(here)), wide.mean().values, marker="_", s=400, color="k", zorder=3, label="mean")
        ax.axhline(0.10, color="0.3", lw=0.8, ls=":")
        ax.set_xticks(range(len(here)), here, rotation=30, ha="right", fontsize=6)
        extra = f"\nbusy region: {busy[name]:.0%} of test images" if busy and name in busy else ""
        ax.set_title(f"{name} ({len(wide)} seeds){extra}", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    return _finish(fig, axes, len(names), "final ASR (odd test half)", title)
