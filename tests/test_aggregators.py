"""Hand-computable tests of paper_repro.aggregators (tiny tensors only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paper_repro import aggregators as agg


def _honest_plus_outlier(k_honest: int = 5, p: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    honest = torch.ones(k_honest, p) + 0.01 * torch.randn(k_honest, p, generator=g)
    outlier = torch.full((1, p), 1e3)
    return torch.cat([honest, outlier]), torch.ones(k_honest + 1)


def test_fedavg_weighted_mean():
    # Prepare
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    weights = torch.tensor([1.0, 3.0])
    # Execute
    out = agg.fedavg(updates, weights)
    # Assert
    torch.testing.assert_close(out, torch.tensor([2.5, 3.5]))
    assert out.dtype == torch.float32


def test_fedavg_rejects_bad_weights():
    # Prepare
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # Execute / Assert
    with pytest.raises(ValueError, match="positive sum"):
        agg.fedavg(updates, torch.zeros(2))


def test_norm_clip_explicit_bound_on_3_4_5():
    # Prepare: norms 5 (clipped to 1 → [0.6, 0.8]) and 0.5 (kept)
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    weights = torch.tensor([1.0, 1.0])
    # Execute
    out = agg.norm_clip(updates, weights, max_norm=1.0)
    # Assert
    torch.testing.assert_close(out, torch.tensor([0.45, 0.6]))


def test_norm_clip_default_bound_is_ratio_times_median_norm():
    # Prepare: norms 5, 1, 1 → median 1 → M = 0.9; every row is clipped to norm 0.9
    updates = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 1.0]])
    weights = torch.ones(3)
    # Execute
    out = agg.norm_clip(updates, weights)
    # Assert: rows become [.54, .72], [.54, .72], [0, .9]
    torch.testing.assert_close(out, torch.tensor([0.36, 0.78]))


def test_robust_rules_ignore_outlier_while_fedavg_is_pulled():
    # Prepare
    updates, weights = _honest_plus_outlier()
    honest_mean = updates[:5].mean(0)
    # Execute
    results = {
        "krum": agg.krum(updates, weights, num_malicious=1),
        "multi_krum": agg.multi_krum(updates, weights, num_malicious=1),
        "median": agg.median(updates, weights),
        "trimmed_mean": agg.trimmed_mean(updates, weights, beta=0.2),
    }
    avg = agg.fedavg(updates, weights)
    _, krum_idx = agg.krum_select(updates, weights)
    _, mk_idx = agg.multi_krum_select(updates, weights)
    # Assert
    for name, out in results.items():
        assert torch.linalg.vector_norm(out - honest_mean) < 0.1, name
    assert torch.linalg.vector_norm(avg - honest_mean) > 100
    assert krum_idx.tolist() != [5] and len(krum_idx) == 1
    np.testing.assert_array_equal(mk_idx, np.arange(5))
    torch.testing.assert_close(results["multi_krum"], honest_mean)


def test_krum_scores_by_hand():
    # Prepare: 1-D points 0, 1, 3, 10, 11 with f=1 → each score sums the K-f-2 = 2 nearest squared distances
    updates = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]])
    # Execute
    scores = agg.krum_scores(updates, num_malicious=1)
    out, idx = agg.krum_select(updates, torch.ones(5))
    # Assert: 0:{1,9}=10, 1:{1,4}=5, 3:{4,9}=13, 10:{1,49}=50, 11:{1,64}=65
    torch.testing.assert_close(scores, torch.tensor([10.0, 5.0, 13.0, 50.0, 65.0], dtype=torch.float64))
    assert idx.tolist() == [1]
    torch.testing.assert_close(out, torch.tensor([1.0]))


def test_krum_raises_for_too_few_clients():
    # Prepare: K = 4 = 2f + 2 with f = 1
    updates = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    weights = torch.ones(4)
    # Execute / Assert
    with pytest.raises(ValueError, match="K > 2f \\+ 2"):
        agg.krum(updates, weights, num_malicious=1)
    with pytest.raises(ValueError, match="K > 2f \\+ 2"):
        agg.multi_krum(updates, weights, num_malicious=1)


def test_trimmed_mean_by_hand():
    # Prepare: K = 5, beta = 0.2 → drop 1 largest and 1 smallest per coordinate
    updates = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, -30.0], [100.0, 40.0], [5.0, 50.0]])
    weights = torch.ones(5)
    # Execute
    out = agg.trimmed_mean(updates, weights, beta=0.2)
    # Assert: column 0 keeps 2, 3, 5; column 1 keeps 10, 20, 40
    torch.testing.assert_close(out, torch.tensor([10.0 / 3, 70.0 / 3]))


def test_trimmed_mean_raises_when_nothing_remains():
    # Prepare: K = 2, beta = 0.5 → drops 1 + 1 of 2 values
    updates = torch.tensor([[1.0], [2.0]])
    # Execute / Assert
    with pytest.raises(ValueError, match="nothing remains"):
        agg.trimmed_mean(updates, torch.ones(2), beta=0.5)


def test_median_odd_and_even_by_hand():
    # Prepare
    odd = torch.tensor([[1.0, 9.0], [5.0, -1.0], [2.0, 3.0]])
    even = torch.tensor([[1.0], [4.0], [2.0], [10.0]])
    # Execute
    out_odd = agg.median(odd, torch.ones(3))
    out_even = agg.median(even, torch.ones(4))
    # Assert: the even case averages the two middle values (2, 4)
    torch.testing.assert_close(out_odd, torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(out_even, torch.tensor([3.0]))


def test_dp_sigma_zero_equals_norm_clip_and_seeded_noise_is_repeatable():
    # Prepare
    updates = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.3, 0.4], [1.0, 0.0, 0.0]])
    weights = torch.tensor([2.0, 1.0, 1.0])
    # Execute
    no_noise = agg.dp(updates, weights, max_norm=1.0, sigma=0.0)
    clipped = agg.norm_clip(updates, weights, max_norm=1.0)
    a = agg.dp(updates, weights, max_norm=1.0, sigma=0.5, generator=torch.Generator().manual_seed(7))
    b = agg.dp(updates, weights, max_norm=1.0, sigma=0.5, generator=torch.Generator().manual_seed(7))
    c = agg.dp(updates, weights, max_norm=1.0, sigma=0.5, generator=torch.Generator().manual_seed(8))
    expected_noise = 0.5 * torch.randn(3, generator=torch.Generator().manual_seed(7))
    # Assert
    torch.testing.assert_close(no_noise, clipped)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(a - clipped, expected_noise)


def _flame_setup(scaled: bool = False, p: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # 6 honest updates = a shared direction + an orthogonal nudge each, so all honest local models are equally far
    # apart in cosine distance; 1 attacker pointing the opposite way. ``scaled``: honest norms differ (×0.5 … ×2) and
    # the global model is 0 (so scaling leaves the cosine distances between local models unchanged).
    base = torch.zeros(p)
    base[6:] = torch.randn(p - 6, generator=torch.Generator().manual_seed(1))
    honest = base + 0.1 * torch.eye(p)[:6]
    if scaled:
        honest = honest * torch.linspace(0.5, 2.0, 6).unsqueeze(1)
    global_params = torch.zeros(p) if scaled else torch.full((p,), 0.01)
    return torch.cat([honest, -base.unsqueeze(0)]), torch.ones(7), global_params


def test_flame_rejects_opposite_update():
    # Prepare: honest norms are equal, so S_t (their norm) clips nothing
    updates, weights, global_params = _flame_setup()
    # Execute
    out, accepted = agg.flame_select(updates, weights, global_params, noise_lambda=0.0)
    # Assert
    np.testing.assert_array_equal(accepted, np.arange(6))
    torch.testing.assert_close(out, updates[:6].mean(0))


def test_flame_clips_admitted_to_median_norm_of_all():
    # Prepare
    updates, weights, global_params = _flame_setup(scaled=True)
    norms = torch.linalg.vector_norm(updates, dim=1)
    s_t = norms.median()  # K = 7 is odd: the middle norm, over all clients including the attacker
    expected = (updates[:6] * torch.clamp(s_t / norms[:6], max=1.0).unsqueeze(1)).mean(0)
    # Execute
    out, accepted = agg.flame_select(updates, weights, global_params, noise_lambda=0.0)
    # Assert
    np.testing.assert_array_equal(accepted, np.arange(6))
    assert (norms[:6] > s_t).any()  # some clipping really happens
    torch.testing.assert_close(out, expected)


def test_flame_noise_scale_is_lambda_times_median_norm():
    # Prepare
    updates, weights, global_params = _flame_setup()
    s_t = float(torch.linalg.vector_norm(updates, dim=1).median())
    lam = 0.01
    # Execute
    clean = agg.flame(updates, weights, global_params, noise_lambda=0.0)
    noisy = agg.flame(updates, weights, global_params, noise_lambda=lam, generator=torch.Generator().manual_seed(3))
    # Assert
    expected_noise = lam * s_t * torch.randn(updates.shape[1], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy - clean, expected_noise)


def test_foolsgold_zeroes_sybils_and_keeps_diverse_honest():
    # Prepare: clients 0 and 1 are identical sybils, 2–4 are mutually orthogonal honest clients
    eye = torch.eye(6)
    history = torch.stack([eye[0] + eye[1], eye[0] + eye[1], eye[2], eye[3], eye[4] + 0.5 * eye[5]])
    updates = history.clone()
    weights = torch.ones(5)
    # Execute
    alpha = agg.foolsgold_weights(history)
    out = agg.foolsgold(updates, weights, history)
    # Assert: honest α = 1 → 0.99 → ln(99) + 0.5 > 1 → clipped to 1; sybil α = 1 − 1 = 0
    torch.testing.assert_close(alpha, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(out, updates[2:].mean(0))


def test_foolsgold_partial_similarity_by_hand():
    # Prepare: cs(0,1) = 0.6, client 2 orthogonal to both; v = [.6, .6, 0] so no pardoning
    history = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    # Execute
    alpha = agg.foolsgold_weights(history, kappa=1.0)
    # Assert: α = [.4, .4, 1] → /1 → [.4, .4, .99] → logit + .5 → [ln(2/3) + .5, same, 1]
    a = math.log(0.4 / 0.6) + 0.5
    torch.testing.assert_close(alpha, torch.tensor([a, a, 1.0]))


def test_foolsgold_all_identical_returns_zeros():
    # Prepare
    updates = torch.ones(3, 4)
    # Execute
    out = agg.foolsgold(updates, torch.ones(3), history=updates)
    # Assert
    torch.testing.assert_close(out, torch.zeros(4))


def test_no_aggregator_modifies_its_inputs():
    # Prepare
    updates, weights = _honest_plus_outlier()
    weights = torch.arange(1.0, 7.0)
    global_params = torch.full((updates.shape[1],), 0.5)
    history = updates * 2
    extra = {"flame": {"global_params": global_params}, "foolsgold": {"history": history}, "dp": {"sigma": 0.1}}
    originals = (updates.clone(), weights.clone(), global_params.clone(), history.clone())
    # Execute
    outs = {name: fn(updates, weights, **extra.get(name, {})) for name, fn in agg.AGGREGATORS.items()}
    agg.krum_select(updates, weights)
    agg.multi_krum_select(updates, weights)
    agg.flame_select(updates, weights, global_params)
    agg.foolsgold_weights(history)
    # Assert
    for before, after in zip(originals, (updates, weights, global_params, history)):
        assert torch.equal(before, after)
    for name, out in outs.items():
        assert out.shape == (updates.shape[1],) and out.dtype == updates.dtype, name
        assert out.data_ptr() != updates.data_ptr(), name


def test_registry_lists_all_rules():
    # Prepare
    expected = {"fedavg", "norm_clip", "dp", "krum", "multi_krum", "median", "trimmed_mean", "flame", "foolsgold"}
    # Execute
    names = set(agg.AGGREGATORS)
    # Assert
    assert names == expected


def test_a_non_finite_update_is_never_selected_and_never_shifts_a_robust_rule():
    # Prepare: four honest updates near 1 and one client sending NaN (and one inf coordinate for the trimmed mean)
    g = torch.Generator().manual_seed(0)
    honest = 1 + 0.01 * torch.randn(4, 6, generator=g)
    bad = torch.full((1, 6), float("nan"))
    updates, w = torch.cat([bad, honest]), torch.ones(5)
    # Execute / Assert: Krum keeps an honest update, Multi-Krum averages honest ones only
    u, kept = agg.krum_select(updates, w, num_malicious=1)
    assert kept.tolist() != [0] and torch.isfinite(u).all()
    u, kept = agg.multi_krum_select(updates, w, num_malicious=1)
    assert 0 not in kept.tolist() and torch.isfinite(u).all()
    torch.testing.assert_close(agg.median(updates, w), agg.median(honest, w[:4]))
    inf = updates.clone()
    inf[0] = float("inf")
    torch.testing.assert_close(agg.trimmed_mean(inf, w, beta=0.0), honest.mean(0))
    assert torch.isinf(agg.krum_scores(inf, 1)[0])


def test_robust_defenses_flag_a_non_finite_update():
    import paper_repro as pr
    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import RoundContext
    from paper_repro.models import build_model

    train, _ = make_synthetic_blobs(200, 10)
    model = build_model("tiny", train.shape, 10, seed=0)
    p = pr.models.flat_state(model).numel()
    updates = 0.01 * torch.randn(5, p, generator=torch.Generator().manual_seed(1))
    updates[2] = float("nan")
    ctx = RoundContext(1, np.array([10, 11, 12, 13, 14]), model, train, torch.Generator().manual_seed(0), "cpu", 1)
    for name in ("norm_clip", "dp", "median", "trimmed_mean", "flame", "foolsgold", "mars", "krum", "multi_krum"):
        res = pr.defenses.get(name).aggregate(updates, torch.ones(5), ctx)
        assert torch.isfinite(res.update).all(), name
        assert 12 in (res.flagged or []), name
