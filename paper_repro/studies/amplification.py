"""H2's diagnosis (docs/protocol.md, "The defense study"): where act_bound *raises* an attack's ASR, which bounded
units of the last hidden layer move the triggered images' logits towards the target class, and how class-selective
those units are.

The last hidden layer feeds the classifier linearly (``SmallCNN``: ``relu3`` → ``fc2``), so the change that its
bounds alone make to an image's logits is exact and splits into units: clipping unit u from a_u to min(a_u, b_u)
changes logit c by W[c, u] · (min(a_u, b_u) − a_u). For a triggered image of true class y, the change of its
target-vs-true margin z_t − z_y is the sum over units of (W[t, u] − W[y, u]) · (min(a_u, b_u) − a_u): positive
terms push the image towards the target. H2 expects those terms to come from units selective for the image's own
class (bounded at a global quantile, they lose the evidence the true class rests on), not from units the trigger
drives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def class_selectivity(acts: torch.Tensor, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit of ``acts`` (N, U) on clean images with ``labels``: the class it fires for most (mean activation)
    and its selectivity (m_top − m_rest) / (m_top + m_rest), m_rest the mean over the other classes' means: 0 for a
    unit that fires alike for every class, 1 for one that fires for a single class only (0 for a silent unit)."""
    labels = np.asarray(labels)
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"class selectivity needs images of every class; none of {missing}")
    means = torch.stack([acts[torch.as_tensor(labels == c)].mean(0) for c in range(num_classes)])  # (C, U)
    top = means.argmax(0)
    m_top = means.max(0).values
    m_rest = (means.sum(0) - m_top) / (num_classes - 1)
    denom = m_top + m_rest
    sel = torch.where(denom > 0, (m_top - m_rest) / denom.clamp_min(1e-12), torch.zeros_like(denom))
    return top.numpy(), sel.numpy()


def margin_terms(
    acts: torch.Tensor, bound: torch.Tensor, weight: torch.Tensor, labels: np.ndarray, target: int
) -> torch.Tensor:
    """(N, U): each unit's term of the change that clipping ``acts`` (N, U) at ``bound`` (U,) makes to every image's
    target-vs-true margin z_t − z_y, through the linear head ``weight`` (C, U). Rows sum to the exact change."""
    delta = torch.minimum(acts, bound) - acts  # ≤ 0 where a unit is clipped
    w = weight[target][None, :] - weight[torch.as_tensor(np.asarray(labels))]  # (N, U): W[t] − W[y]
    return w * delta


def decompose(
    acts: torch.Tensor,
    bound: torch.Tensor,
    weight: torch.Tensor,
    labels: np.ndarray,
    target: int,
    top_class: np.ndarray,
    selectivity: np.ndarray,
    selective: float = 0.5,
) -> pd.DataFrame:
    """One row per unit: its bound, how often it is clipped on these images, its mean margin term, the class it
    prefers and its selectivity, and the share of its term that falls on images of the class it prefers."""
    terms = margin_terms(acts, bound, weight, labels, target)
    labels = np.asarray(labels)
    own = torch.as_tensor(labels[:, None] == np.asarray(top_class)[None, :])  # image of the unit's preferred class
    df = pd.DataFrame(
        {
            "unit": np.arange(acts.shape[1]),
            "bound": bound.numpy(),
            "clipped_share": (acts > bound).float().mean(0).numpy(),
            "margin_term": terms.mean(0).numpy(),
            "own_class_term": (terms * own).sum(0).numpy() / len(acts),
            "top_class": np.asarray(top_class),
            "selectivity": np.asarray(selectivity),
        }
    )
    df["selective"] = df["selectivity"] >= selective
    return df.sort_values("margin_term", ascending=False, ignore_index=True)


def summary(units: pd.DataFrame) -> dict:
    """The mean change of the target-vs-true margin from the bounds of this layer, and the parts of it carried by
    selective units and by selective units on images of their own class (the H2 mechanism)."""
    return {
        "margin_change": float(units["margin_term"].sum()),
        "from_selective": float(units.loc[units["selective"], "margin_term"].sum()),
        "from_own_class": float(units.loc[units["selective"], "own_class_term"].sum()),
        "units_clipped": int((units["clipped_share"] > 0).sum()),
    }


def margin_decomposition(run, n: int = 500, site: str = "relu3", head: str = "fc2") -> pd.DataFrame:
    """:func:`decompose` on a :class:`~paper_repro.studies.activations.BoundedRun`: ``n`` triggered non-target test
    images, the bounds act_bound fitted at ``site``, the linear ``head`` after it; class selectivity measured on the
    run's synthetic set (what the server has), on the unbounded model."""
    from ..activation_bounds import record_activations

    if site not in run.bounds:
        raise ValueError(f"act_bound bounded no {site!r} in this run (bounded: {list(run.bounds)})")
    _, trig = run.paired_inputs(n)
    test, target = run.prep.inputs.test, run.cfg.attack.target_class
    labels = test.y[np.flatnonzero(test.y != target)[: len(trig)]]
    syn = run.prep.inputs.synthetic_kd
    xs = syn.tensors(run.opts.device)[0]
    a_syn = record_activations(run.model, xs, [site])[site].flatten(1).cpu()
    top, sel = class_selectivity(a_syn, syn.y, syn.num_classes)
    acts = run.activations(trig, site, False).cpu()
    weight = getattr(run.model, head).weight.detach().cpu()
    bound = run.bounds[site].flatten().detach().cpu()
    return decompose(acts, bound, weight, labels, target, top, sel)


def diagnose(
    profile: str = "quick", seeds: tuple[int, ...] | None = None, attacks: tuple[str, ...] | None = None, **kw
) -> pd.DataFrame:
    """Per amplified attack of the defense study (its H2 settings) and held-out seed: train without defense (the
    training H2's post-fusion cells share; kept with its weights), fit act_bound as the study does, and decompose
    the change of the triggered images' target-vs-true margin that the ``relu3`` bounds make (:func:`summary`),
    beside ASR without and with act_bound. Writes nothing; ``python -m paper_repro.studies.amplification`` saves
    ``amplification_<profile>.csv``."""
    from . import defense_study as ds
    from .activations import train_and_bound

    rows = []
    for attack in attacks or tuple(ds.AMPLIFIED):
        for seed in seeds or ds.SEEDS:
            cfg = ds.study_config(profile, ds.AMPLIFIED[attack], "act_bound", seed)
            run = train_and_bound(cfg, False, **kw, **cfg.defense.params)
            units = margin_decomposition(run)
            rows.append({"attack": attack, "seed": seed, **run.metrics, **summary(units)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    from ..tables import TABLES_DIR, record_checksum, table_path, write_csv

    out = table_path("amplification", "quick", TABLES_DIR)
    write_csv(diagnose("quick"), out, "%.5g")
    record_checksum(out)
    print(f"wrote {out}")
