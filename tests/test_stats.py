"""The statistics of bounded per-seed metrics, each against a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from paper_repro import stats

pytestmark = pytest.mark.unit


def test_sign_flip_p_counts_the_sign_assignments_at_least_as_extreme():
    assert stats.sign_flip_p(np.array([1.0, 1.0, 1.0, 1.0, 1.0])) == pytest.approx(2 / 32)  # all + or all −
    # d = (3, 1): flips give |mean| 2, 1, 1, 2 → two of four at least 2
    assert stats.sign_flip_p(np.array([3.0, 1.0])) == pytest.approx(0.5)
    assert stats.sign_flip_p(np.array([1.0, -1.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="too many"):
        stats.sign_flip_p(np.ones(21))


def test_paired_differences_by_hand():
    a, b = [0.9, 0.8, 0.7, np.nan], [0.5, 0.6, 0.7, 0.1]
    r = stats.paired(a, b)
    assert r["n"] == 3 and r["diff"] == pytest.approx(0.2)  # (0.4 + 0.2 + 0) / 3, the NaN pair dropped
    # sd of (0.4, 0.2, 0) = 0.2; t(0.975, 2) = 4.3027 → half-width 4.3027 · 0.2 / √3 = 0.4968
    assert r["hi"] - r["diff"] == pytest.approx(4.302653 * 0.2 / np.sqrt(3), rel=1e-5)
    assert (r["a_higher"], r["a_lower"]) == (2, 0)
    assert r["p_exact"] == pytest.approx(4 / 8)  # flips of (0.4, 0.2, 0): |mean| ≥ 0.2 in 4 of 8
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired([1, 2], [1, 2, 3])


def test_clopper_pearson_matches_the_closed_form_at_the_edges():
    lo, hi = stats.clopper_pearson(5, 5)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 5))  # k = n: lower bound (α/2)^(1/n)
    lo, hi = stats.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.clopper_pearson(6, 5)


def test_logit_and_bootstrap_intervals_stay_inside_the_unit_interval():
    asr = [0.024, 0.015, 0.993]  # bimodal, as median's ASR on data poisoning
    centre, lo, hi = stats.logit_interval(asr)
    assert 0 < lo < centre < hi < 1
    # logit of (0.024, 0.015, 0.993) = (−3.705, −4.185, 4.955): mean −0.978 → centre expit(−0.978) = 0.2732
    assert centre == pytest.approx(0.2732, abs=1e-3)
    blo, bhi = stats.bootstrap_interval(asr)
    assert min(asr) <= blo <= bhi <= max(asr)
    assert stats.bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_holm_adjusts_step_down_and_keeps_the_order():
    # sorted 0.01, 0.02, 0.04 → 3·0.01 = 0.03, 2·0.02 = 0.04, 1·0.04 = 0.04 (monotone)
    np.testing.assert_allclose(stats.holm([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])


def test_t_interval_is_the_clipped_student_t_interval_of_a_share():
    # 0.90, 0.95, 0.97: mean 0.94, sd sqrt(0.0013), t(0.975, 2) = 4.3027 → half 0.08957; the top is clipped at 1
    lo, hi = stats.t_interval([0.90, 0.95, 0.97])
    assert lo == pytest.approx(0.94 - 4.302653 * np.sqrt(0.0013 / 3), abs=1e-6) and hi == 1.0
    assert stats.t_interval([0.01, 0.02, 0.0])[0] == 0.0
    assert all(np.isnan(stats.t_interval([0.5, np.nan])))
