"""Hidden activations of the global model on clean vs triggered inputs, before and after the activation bounds:
the paper's motivating observation (F3) and the teaching walkthrough (notebook 05).

A backdoor shows up as a few hidden units that fire far harder on triggered inputs than on any clean one; an upper
bound fitted on (mostly clean) synthetic images caps exactly those units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import defenses
from ..activation_bounds import clip_hooks, record_activations
from ..config import Config, DefenseConfig
from ..defenses import RoundContext
from ..fl import evaluate_served
from ..inputs import Prepared, prepare
from ..models import build_model
from ..options import RunOptions, options_for
from ..profiles import load_config
from ..progress import tqdm
from ..rng import torch_gen
from ..runner import final_model, run_experiment


@dataclass
class BoundedRun:
    """A global model trained without defense, and the act_bound defense fitted once on it (after the last
    fusion, on the run's own — possibly poisoned — synthetic set)."""

    cfg: Config
    opts: RunOptions
    prep: Prepared
    model: nn.Module
    defense: defenses.Defense
    metrics: dict
    """ACC/ASR of the model without and with the bounds: acc, asr, acc_bounded, asr_bounded."""

    @property
    def bounds(self) -> dict[str, torch.Tensor]:
        return self.defense.bounds

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """ACC/ASR of ``model`` on this run's test sets."""
        return evaluate_served(model, self.cfg, self.prep.inputs, self.opts)

    def paired_inputs(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` clean non-target test images and the same images with the trigger."""
        test, target = self.prep.inputs.test, self.cfg.attack.target_class
        keep = np.flatnonzero(test.y != target)[:n]
        clean = test.subset(keep).tensors(self.opts.device)[0]
        trig = self.prep.inputs.asr_test.subset(np.arange(len(keep))).tensors(self.opts.device)[0]
        return clean, trig

    def activations(self, x: torch.Tensor, site: str, bounded: bool) -> torch.Tensor:
        """(N, units) activations at ``site``, flattened per image, with or without the bounds."""
        if not bounded:
            return record_activations(self.model, x, [site])[site].flatten(1)
        with clip_hooks(self.model, self.bounds):  # the clip hook runs first, the recording hook sees its output
            return record_activations(self.model, x, [site])[site].flatten(1)


def train_and_bound(
    cfg: Config, progress: bool = True, options: RunOptions | None = None, results_dir=None, **act_bound_params
) -> BoundedRun:
    """Train ``cfg`` without defense, then fit ``act_bound`` (``act_bound_params`` override its defaults).

    The final weights are those the no-defense run saved in the results folder (``keep_model``: run once, then
    loaded), the very training that the grid's act_bound cell is served from."""
    opts = options_for(cfg.profile, options)
    prep = prepare(cfg, progress, opts)
    # no progress bar: whether the no-defense run is trained here or served depends on what ran before
    res = run_experiment(replace(cfg, defense=DefenseConfig()), results_dir, False, keep_model=True, options=opts)
    test = prep.inputs.test
    model = build_model(cfg.model.name, test.shape, test.num_classes, 0).to(opts.device)
    model.load_state_dict(final_model(res))
    d, served = fit_act_bound(cfg, opts, prep, model, act_bound_params)
    plain, bounded = (evaluate_served(m, cfg, prep.inputs, opts) for m in (model, served))
    metrics = {**plain, "acc_bounded": bounded["acc"], "asr_bounded": bounded["asr"]}
    return BoundedRun(cfg, opts, prep, model, d, metrics)


def fit_act_bound(
    cfg: Config, opts: RunOptions, prep: Prepared, model: nn.Module, params: dict
) -> tuple[defenses.Defense, nn.Module]:
    """A fresh act_bound defense (``params`` override its defaults) fitted once, as after the last fusion, on the
    run's synthetic set; returns it and the bounded model it serves (``model``'s weights stay untouched)."""
    d = defenses.get("act_bound", **params)
    ctx = RoundContext(
        cfg.fl.num_rounds,
        np.arange(0),
        model,
        prep.inputs.synthetic_kd,
        torch_gen(cfg.seed, "analysis_act_bound"),
        opts.device,
        cfg.fl.num_rounds,
    )
    return d, d.after_fusion(model, ctx)


def trigger_units(clean: torch.Tensor, trig: torch.Tensor, top_k: int) -> np.ndarray:
    """Indices of the ``top_k`` units whose mean activation the trigger raises most (triggered − clean)."""
    gap = trig.mean(0) - clean.mean(0)
    return np.asarray(torch.argsort(gap, descending=True)[:top_k])


def unit_profile(run: BoundedRun, site: str | None = None, n: int = 500) -> pd.DataFrame:
    """One row per unit of ``site`` (default: the last bounded layer): mean activation on clean and on triggered
    images, the 99th percentile on clean images, and the learned bound; sorted by the trigger's effect."""
    site = site or list(run.bounds)[-1]
    clean, trig = run.paired_inputs(n)
    a_c, a_t = run.activations(clean, site, False), run.activations(trig, site, False)
    bound = run.bounds[site].flatten().cpu().numpy() if site in run.bounds else np.full(a_c.shape[1], np.nan)
    df = pd.DataFrame(
        {
            "unit": np.arange(a_c.shape[1]),
            "clean_mean": a_c.mean(0).numpy(),
            "clean_p99": torch.quantile(a_c, 0.99, dim=0).numpy(),
            "triggered_mean": a_t.mean(0).numpy(),
            "bound": bound,
        }
    )
    df["trigger_gap"] = df["triggered_mean"] - df["clean_mean"]
    df.insert(0, "site", site)
    return df.sort_values("trigger_gap", ascending=False, ignore_index=True)


def activation_scores(run: BoundedRun, site: str | None = None, n: int = 500, top_k: int = 20) -> pd.DataFrame:
    """Tidy per-image scores: the mean activation of the ``top_k`` trigger-sensitive units of ``site`` (chosen on the
    unbounded model), for clean and triggered inputs, without and with the bounds."""
    site = site or list(run.bounds)[-1]
    clean, trig = run.paired_inputs(n)
    units = trigger_units(run.activations(clean, site, False), run.activations(trig, site, False), top_k)
    rows = []
    for bounded in (False, True):
        for name, x in (("clean", clean), ("triggered", trig)):
            s = run.activations(x, site, bounded)[:, units].mean(1).numpy()
            rows.append(
                pd.DataFrame(
                    {
                        "model": "act_bound" if bounded else "no defense",
                        "input": name,
                        "image": np.arange(len(s)),
                        "score": s,
                    }
                )
            )
    df = pd.concat(rows, ignore_index=True)
    df.insert(0, "site", site)
    df.insert(0, "attack", run.cfg.attack.kind)
    return df


def activation_study(
    profile: str = "quick",
    seed: int = 0,
    attacks: tuple[str, ...] = ("none", "classic", "fm"),
    n: int = 500,
    top_k: int = 20,
    progress: bool = True,
    results_dir=None,
    options: RunOptions | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """F3's data: for each attack, train without defense, fit act_bound once, and score clean vs triggered inputs.
    Returns (scores, metrics): tidy per-image scores and one row of ACC/ASR (plain and bounded) per attack."""
    scores, metrics = [], []
    for attack in tqdm(attacks, desc="activation study", disable=not progress):
        run = train_and_bound(load_config(profile, attack={"kind": attack}, seed=seed), False, options, results_dir)
        scores.append(activation_scores(run, n=n, top_k=top_k))
        metrics.append({"attack": attack, "seed": seed, **run.metrics})
    return pd.concat(scores, ignore_index=True), pd.DataFrame(metrics)


def knob_sweep(run: BoundedRun, variants: dict[str, dict], progress: bool = True) -> pd.DataFrame:
    """Re-fit act_bound on the same trained model once per variant (``label → act_bound parameters``); ACC/ASR of
    the bounded model and the seconds of the fit. The teaching notebook's "what each knob does"."""
    import time

    rows = [{"variant": "no defense", "acc": run.metrics["acc"], "asr": run.metrics["asr"], "fit_seconds": 0.0}]
    for label, params in tqdm(variants.items(), desc="variants", disable=not progress):
        t = time.perf_counter()
        _, served = fit_act_bound(run.cfg, run.opts, run.prep, run.model, params)
        dt = time.perf_counter() - t
        rows.append({"variant": label, **run.evaluate(served), "fit_seconds": dt})
    return pd.DataFrame(rows)
