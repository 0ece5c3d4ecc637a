"""Statistics for bounded, per-seed metrics (docs/protocol.md, "Statistics"): paired differences where two arms share
their seeds (and, for post-fusion defenses, their training), exact sign-flip tests for few seeds, Clopper–Pearson
intervals for "k of n seeds", bootstrap and logit-scale intervals for shares such as ASR, and Holm's correction for
a family of comparisons. Pure functions of arrays; no run is read here."""

from __future__ import annotations

import itertools

import numpy as np


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired arms need one value per seed each, in the same order; got shapes {a.shape}, {b.shape}"
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided p-value of the paired sign-flip (permutation) test of mean(d) = 0: the share of the 2ⁿ sign
    assignments whose |mean| is at least the observed one (n ≤ 20; with n = 5 the smallest p is 2/32 = 0.0625)."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return float("nan")
    if len(d) > 20:
        raise ValueError(f"sign_flip_p enumerates 2^n sign flips; n = {len(d)} is too many (use paired()['p_t'])")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= abs(d.mean()) - 1e-12))


def paired(a, b, level: float = 0.95) -> dict:
    """Per-seed differences a − b (NaN pairs dropped): n, mean, Student-t ``level`` interval, paired t-test p,
    exact sign-flip p, and how many seeds have a > b / a < b."""
    from scipy import stats

    a, b = _pairs(a, b)
    d = a - b
    n = len(d)
    out = {"n": n, "diff": float(d.mean()) if n else float("nan"), "lo": float("nan"), "hi": float("nan")}
    if n > 1:
        se = d.std(ddof=1) / np.sqrt(n)
        half = stats.t.ppf(0.5 + level / 2, n - 1) * se
        out |= {"lo": float(d.mean() - half), "hi": float(d.mean() + half)}
        out["p_t"] = float(stats.ttest_rel(a, b).pvalue) if se > 0 else (1.0 if d.mean() == 0 else 0.0)
    else:
        out["p_t"] = float("nan")
    out |= {"p_exact": sign_flip_p(d), "a_higher": int((d > 0).sum()), "a_lower": int((d < 0).sum())}
    return out


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a proportion k/n (e.g. "k of n seeds with ASR ≤ 0.10")."""
    from scipy import stats

    if not 0 <= k <= n or n < 1:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n and n >= 1; got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def t_interval(x, level: float = 0.95) -> tuple[float, float]:
    """Student-t ``level`` interval of the mean of a share over seeds, clipped to [0, 1] (NaN with fewer than two
    values): the interval of the tables' ``<m>_lo``/``<m>_hi`` columns and of the prose's ``lo``/``hi`` marks."""
    from scipy import stats

    v = np.asarray(x, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return max(float(v.mean() - half), 0.0), min(float(v.mean() + half), 1.0)


def logit_interval(x, level: float = 0.95, eps: float = 1e-3) -> tuple[float, float, float]:
    """(centre, low, high): a Student-t interval of the mean on the logit scale, mapped back to [0, 1]; values are
    clamped to [eps, 1 − eps] first (an ASR of 0 or 1 has no logit). It stays inside (0, 1) without clipping and is
    asymmetric near the bounds, where a plain t-interval clipped to [0, 1] is not."""
    from scipy import stats
    from scipy.special import expit, logit

    v = np.asarray(x, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        c = float(v.mean()) if len(v) else float("nan")
        return c, float("nan"), float("nan")
    z = logit(np.clip(v, eps, 1 - eps))
    half = stats.t.ppf(0.5 + level / 2, len(z) - 1) * z.std(ddof=1) / np.sqrt(len(z))
    return float(expit(z.mean())), float(expit(z.mean() - half)), float(expit(z.mean() + half))


def bootstrap_interval(x, level: float = 0.95, resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (stays within the data's range, so within [0, 1] for shares)."""
    from scipy import stats

    v = np.asarray(x, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2 or np.ptp(v) == 0:
        return (float(v.min()), float(v.max())) if len(v) else (float("nan"), float("nan"))
    res = stats.bootstrap(
        (v,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the comparisons of one table)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
