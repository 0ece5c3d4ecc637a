"""One function per figure kind; plots read DataFrames/ImageSets only and return the matplotlib Figure.

Every figure is drawn in one seaborn style (:data:`STYLE`, applied per figure through ``matplotlib.rc_context``, so
importing this module changes no global setting); statistical figures use seaborn: per-round curves with seed bands
(mean ± std), annotated heatmaps, point/bar plots with error bars.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import figstamp
from .data import ImageSet

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.8),
    "axes.prop_cycle": mpl.cycler(color=sns.color_palette("colorblind")),
    "figure.dpi": 100,
}
"""The style of every figure (seaborn whitegrid, colour-blind palette)."""


def styled(plot):
    """Draw ``plot`` under :data:`STYLE` (rc settings restored afterwards)."""

    @functools.wraps(plot)
    def wrapped(*args, **kwargs):
        with mpl.rc_context(STYLE):
            fig = plot(*args, **kwargs)
            interactive = mpl.is_interactive()
        # a backend that activated itself inside the context (Jupyter's inline backend turns interactive mode on at
        # the first figure) keeps its setting: restoring it would stop every later figure from being shown
        mpl.interactive(interactive)
        return fig

    return wrapped


ATTACK_LABELS = {
    "none": "no attack",
    "classic": "classic (malicious clients)",
    "fm": "FM attack (poisoned synthetic)",
    "both": "classic + FM",
}


@styled
def sample_grid(
    data: ImageSet, n_per_class: int = 8, title: str = "", highlight: np.ndarray | None = None, seed: int = 0
):
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


@styled
def trigger_gallery(examples: dict[str, np.ndarray], title: str = ""):
    """One row per attack: its poisoned training images (left) and triggered test images (right); ``examples``:
    ``<label>/train``, ``<label>/test`` uint8 arrays (``paper_repro.studies.attacks.trigger_examples``)."""
    labels = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in examples))
    n_train = max(len(examples[f"{a}/train"]) for a in labels)
    n_test = max(len(examples[f"{a}/test"]) for a in labels)
    cols = n_train + 1 + n_test
    fig, axes = plt.subplots(len(labels), cols, figsize=(cols * 0.85 + 1.4, len(labels) * 0.9), squeeze=False)
    for i, a in enumerate(labels):
        imgs = [*examples[f"{a}/train"], None, *examples[f"{a}/test"]]
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([]), ax.set_yticks([])
            if (img := imgs[j] if j < len(imgs) else None) is None:
                ax.axis("off")
                continue
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
        axes[i][0].set_ylabel(a, rotation=0, ha="right", va="center", fontsize=8)
    axes[0][0].set_title("poisoned training images", loc="left", fontsize=8)
    axes[0][n_train + 1].set_title("triggered test images", loc="left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def rounds(history: pd.DataFrame, hue: str = "attack", title: str = "", labels: dict | None = None):
    """ACC (left) and ASR (right) of the global model per round, one line per ``hue`` value; with several seeds the
    line is their mean and the band ± one standard deviation."""
    labels = labels or ATTACK_LABELS
    data = history.assign(**{hue: history[hue].map(lambda k: labels.get(k, k))})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, m, name in zip(axes, ("acc", "asr"), ("ACC: clean test accuracy", "ASR: triggered non-target → target")):
        sns.lineplot(
            data=data, x="round", y=m, hue=hue, errorbar="sd", marker="o", markersize=4, ax=ax, legend=ax is axes[1]
        )
        ax.set_xlabel("FL round (0 = after synthetic initialisation)")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=8, loc="best", title=None)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def savefig(fig, path: str | Path, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``path``.png/.pdf (an image suffix on ``path`` is dropped), each stamped with what made it
    (:mod:`paper_repro.figstamp`: the tables read, the plotting and notebook code); returns the files written."""
    stamp = figstamp.current()
    path = Path(path).with_suffix("") if Path(path).suffix.lstrip(".") in ("png", "pdf", "svg", "jpg") else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.parent / f"{path.name}.{f}" for f in formats]  # not with_suffix: names may hold dots (dirichlet0.5)
    for f, p in zip(formats, out):
        fig.savefig(p, dpi=dpi, bbox_inches="tight", metadata=figstamp.metadata(f, stamp))
    return out


def _short_labels(labels: list[str]) -> list[str]:
    """Each label without its parenthesised tail, unless two labels would then read the same (``FM SIG (clean
    label)`` and ``FM SIG (dirty label)`` keep theirs)."""
    short = [x.split(" (")[0] for x in labels]
    return [s if short.count(s) == 1 else x for s, x in zip(short, labels)]


@styled
def defense_heatmap(table: pd.DataFrame, title: str = "", spread: pd.DataFrame | None = None):
    """Annotated heatmaps of final ACC (left) and ASR (right): rows = defenses, columns = attacks; ``table`` as
    returned by ``paper_repro.tables.pivot`` (columns (metric, attack)); ``spread`` of the same shape (e.g. the std
    over seeds) is written under each value as ± s. ASR is coloured on its full range 0–1; ACC on the range the
    table spans, so that 0.78 against 0.85 shows as a difference."""
    metrics = [m for m in ("acc", "asr") if m in table.columns.get_level_values(0)]
    wide = max(len(table[m].columns) for m in metrics) > 4  # many attacks: panels one above the other
    w, h = max(4.6, 0.75 * len(table[metrics[0]].columns) + 1.8), 0.36 * len(table) + (2.4 if wide else 1.6)
    fig, axes = plt.subplots(
        *((len(metrics), 1) if wide else (1, len(metrics))),
        figsize=(w, h * len(metrics)) if wide else (w * len(metrics), h),
    )
    axes = np.atleast_1d(axes)
    for ax, m, cmap in zip(axes, metrics, ("Greens", "Reds")):
        sub = table[m].astype(float)
        text = sub.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
        if spread is not None and m in spread.columns.get_level_values(0):
            sd = spread[m].reindex_like(sub).astype(float)
            text = text + sd.map(lambda v: "" if pd.isna(v) else f"\n±{v:.2f}")
        lo, hi = (0.0, 1.0) if m == "asr" else (float(np.nanmin(sub.values)), float(np.nanmax(sub.values)))
        sns.heatmap(
            sub,
            ax=ax,
            cmap=cmap,
            vmin=lo,
            vmax=max(hi, lo + 1e-3),
            annot=text.values,
            fmt="",
            annot_kws={"fontsize": 7},
            cbar_kws={"fraction": 0.05},
            linewidths=0.5,
            linecolor="white",
        )
        # a cell not run is masked by seaborn: grey, no grid line through it, and its dash written
        ax.grid(False)
        ax.set_facecolor("0.93")
        for i, j in zip(*np.nonzero(sub.isna().to_numpy())):
            ax.text(j + 0.5, i + 0.5, "–", ha="center", va="center", fontsize=7, color="0.45")
        ax.set_xticks(
            np.arange(sub.shape[1]) + 0.5,
            _short_labels([ATTACK_LABELS.get(a, a) for a in sub.columns]),
            fontsize=8,
            rotation=30 if wide else 0,
            ha="right" if wide else "center",
        )
        ax.set_yticks(np.arange(sub.shape[0]) + 0.5, sub.index, fontsize=8, rotation=0)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.set_title({"acc": "final ACC (clean test)", "asr": "final ASR (triggered → target)"}[m], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def asr_rounds(history: pd.DataFrame, defenses: list[str], title: str = ""):
    """ASR per round (mean ± std band over seeds), one panel per attack, one line per defense (act_bound bold)."""
    attacks = [a for a in ("classic", "fm", "none") if a in set(history["attack"])]
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.6 * len(attacks), 3.8), sharey=True, squeeze=False)
    data = history[history["defense"].isin(defenses)]
    order = [d for d in defenses if d in set(data["defense"])]
    for ax, attack in zip(axes[0], attacks):
        sns.lineplot(
            data=data[data["attack"] == attack],
            x="round",
            y="asr",
            hue="defense",
            hue_order=order,
            size="defense",
            sizes={d: 2.4 if d == "act_bound" else 1.2 for d in order},
            errorbar="sd",
            marker="o",
            markersize=4,
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set_title(ATTACK_LABELS.get(attack, attack), fontsize=9)
        ax.set_xlabel("FL round (0 = after synthetic initialisation)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("ASR (triggered non-target → target)")
    axes[0][-1].legend(fontsize=8, loc="center right", title=None)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def activation_hist(scores: pd.DataFrame, title: str = "", bins: int = 40):
    """F3: per attack (columns) and model (rows: no defense / act_bound), histograms of the per-image mean activation
    of the trigger-sensitive units, clean vs triggered inputs (``studies.activations.activation_scores``)."""
    attacks = [a for a in ("none", "classic", "fm") if a in set(scores["attack"])]
    models = [m for m in ("no defense", "act_bound") if m in set(scores["model"])]
    fig, axes = plt.subplots(
        len(models), len(attacks), figsize=(4.2 * len(attacks), 2.8 * len(models)), squeeze=False, sharex="col"
    )
    for j, attack in enumerate(attacks):
        sub = scores[scores["attack"] == attack]
        edges = np.linspace(0, max(float(sub["score"].max()), 1e-3), bins + 1)
        for i, model in enumerate(models):
            ax = axes[i][j]
            for inp, color in (("clean", "tab:blue"), ("triggered", "tab:red")):
                s = sub[(sub["model"] == model) & (sub["input"] == inp)]["score"]
                ax.hist(s, bins=edges, alpha=0.55, color=color, label=f"{inp} (mean {s.mean():.2f})")
            ax.set_title(f"{ATTACK_LABELS.get(attack, attack)} — {model}", fontsize=8)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("test images")
            if i == len(models) - 1:
                ax.set_xlabel(f"mean activation of the top trigger units ({sub['site'].iloc[0]})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def unit_profile(profile: pd.DataFrame, top: int = 40, title: str = ""):
    """The ``top`` units the trigger raises most: mean activation on clean and triggered inputs, clean 99th
    percentile, and the learned bound (``paper_repro.studies.activations.unit_profile``)."""
    p = profile.head(top)
    x = np.arange(len(p))
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(p) + 2), 3.6))
    ax.bar(x - 0.2, p["clean_mean"], 0.4, label="clean: mean", color="tab:blue")
    ax.bar(x + 0.2, p["triggered_mean"], 0.4, label="triggered: mean", color="tab:red")
    ax.plot(x, p["clean_p99"], "b_", ms=10, mew=2, label="clean: 99th percentile")
    ax.plot(x, p["bound"], "k_", ms=12, mew=2.5, label="learned upper bound")
    ax.set_xticks(x, p["unit"], rotation=90, fontsize=6)
    ax.set_xlabel(f"unit of {p['site'].iloc[0]} (sorted by how much the trigger raises it)")
    ax.set_ylabel("activation (post-ReLU)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def ablation(df: pd.DataFrame, title: str = ""):
    """F6: one panel per ablation; x = the varied value, ASR (solid) and ACC (dashed) per defense, mean ± std over
    seeds. ``df`` columns: ablation, label, value, defense, acc, asr (``paper_repro.ablations``)."""
    names = list(dict.fromkeys(df["ablation"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False, sharey=True)
    colors = {d: f"C{i}" for i, d in enumerate(dict.fromkeys(df["defense"]))}  # one colour per defense everywhere
    for ax, name in zip(axes[0], names):
        sub = df[df["ablation"] == name]
        order = list(dict.fromkeys(sub["value"].astype(str)))
        for d, g in sub.groupby("defense", sort=False):
            st = g.assign(v=g["value"].astype(str)).groupby("v")[["acc", "asr"]].agg(["mean", "std"]).reindex(order)
            x = [order.index(v) for v in st.index]
            color = colors[d]
            ax.errorbar(
                x, st[("asr", "mean")], st[("asr", "std")].fillna(0), marker="o", ms=4, color=color, label=f"{d}: ASR"
            )
            ax.errorbar(
                x,
                st[("acc", "mean")],
                st[("acc", "std")].fillna(0),
                marker="s",
                ms=3,
                ls="--",
                color=color,
                alpha=0.7,
                label=f"{d}: ACC",
            )
        ax.set_xticks(range(len(order)), order, fontsize=8)
        ax.set_xlabel(sub["label"].iloc[0], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final ACC (dashed) / ASR (solid)")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=7, loc="center left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def overhead(grid: pd.DataFrame, title: str = ""):
    """F7: seconds per round split into the defense's share and the rest of the round (mean over runs), one bar per
    defense, the share in % written beside it."""
    g = grid.groupby("defense")[["defense_seconds", "round_seconds"]].mean().sort_values("defense_seconds")
    rest = g["round_seconds"] - g["defense_seconds"]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(g) + 1.4))
    y = np.arange(len(g))
    ax.barh(y, rest, color="lightgray", label="rest of the round (local training, fusion, evaluation)")
    ax.barh(y, g["defense_seconds"], left=rest, color="tab:orange", label="defense")
    for i, (d, s) in enumerate(g.iterrows()):
        ax.text(
            s["round_seconds"] * 1.01,
            i,
            f"{100 * s['defense_seconds'] / s['round_seconds']:.1f} %",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(y, g.index, fontsize=8)
    ax.set_xlabel("wall-clock seconds per FL round")
    ax.set_xlim(0, g["round_seconds"].max() * 1.15)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


@styled
def table(df: pd.DataFrame, title: str = "", col_width: float = 1.4, fontsize: int = 7):
    """A DataFrame drawn as a figure (for tables such as T1 that must also exist as PNG/PDF)."""
    fig, ax = plt.subplots(figsize=(col_width * len(df.columns) + 0.5, 0.28 * len(df) + 0.9))
    ax.axis("off")
    t = ax.table(cellText=df.astype(str).values, colLabels=list(df.columns), loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(fontsize)
    t.scale(1, 1.25)
    t.auto_set_column_width(list(range(len(df.columns))))
    for (r, _), cell in t.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@styled
def tradeoff(df: pd.DataFrame, title: str = ""):
    """ASR (x) against ACC (y), one labelled point per row of ``df`` (columns variant, acc, asr): lower right is
    better."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, r in df.reset_index(drop=True).iterrows():
        ax.scatter(r["asr"], r["acc"], s=40, color=f"C{i % 10}")
        ax.annotate(r["variant"], (r["asr"], r["acc"]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xlabel("ASR (triggered non-target → target), lower is better")
    ax.set_ylabel("ACC (clean test), higher is better")
    ax.set_xlim(-0.03, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
