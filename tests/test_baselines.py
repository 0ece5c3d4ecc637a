"""CLP (channel Lipschitzness-based pruning) and RLR (robust learning rate): hand-computed cases."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import paper_repro as pr
from paper_repro.defenses.clp import channel_lipschitz, clp_prune, conv_bn_pairs
from paper_repro.defenses.rlr import robust_lr

pytestmark = pytest.mark.unit


def _conv_with_one_loud_channel():
    """10 output channels of 1×1 kernels over 1 input: spectral norm = |weight|, 1 for channels 0–8 and 10 for 9.
    Layer mean 1.9, unbiased std √8.1 ≈ 2.846: u = 2 gives 7.59 (channel 9 pruned), u = 3 gives 10.44 (none)."""
    conv = nn.Conv2d(1, 10, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[9] = -10.0
        conv.bias.fill_(0.5)
    return nn.Sequential(conv, nn.ReLU())


def test_channel_lipschitz_is_the_kernel_spectral_norm_times_the_batchnorm_scale():
    conv = nn.Conv2d(2, 2, 2, bias=False)
    with torch.no_grad():  # channel 0: rows (3, 0, 0, 0), (0, 4, 0, 0) → singular values 4, 3; channel 1: rank 1
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0], conv.weight[0, 1, 0, 1] = 3.0, 4.0
        conv.weight[1] = 1.0  # all-ones 2×4: spectral norm √8
    np.testing.assert_allclose(channel_lipschitz(conv).numpy(), [4.0, np.sqrt(8)])
    bn = nn.BatchNorm2d(2, eps=0.0)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-2.0, 1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0]))  # |γ/σ| = 1 and 1
    np.testing.assert_allclose(channel_lipschitz(conv, bn).numpy(), [4.0, np.sqrt(8)])


def test_clp_zeroes_exactly_the_outlying_channel_in_a_copy():
    model = _conv_with_one_loud_channel()
    served, pruned = clp_prune(model, u=2.0)
    assert pruned == {"0": [9]}
    assert served[0].weight[9].abs().sum() == 0 and served[0].bias[9] == 0
    assert torch.equal(served[0].weight[:9], model[0].weight[:9])
    assert model[0].weight[9].item() == -10.0  # the fused model is untouched
    assert clp_prune(model, u=3.0)[1] == {"0": []}  # the paper's u = 3 keeps it (10 < 10.44)


def test_clp_pairs_a_convolution_with_its_batchnorm_only():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.BatchNorm2d(4))
    pairs = conv_bn_pairs(model)
    assert [(n, bn is not None) for n, _, bn in pairs] == [("0", True), ("3", False)]  # 8 ≠ 4 channels
    served, _ = clp_prune(model, u=0.1)
    assert served[1].weight.abs().sum() < model[1].weight.abs().sum()  # pruned channels' γ zeroed too


def test_robust_lr_negates_coordinates_without_a_sign_majority():
    updates = torch.tensor(
        [
            [1.0, 1.0, -1.0, 0.5],
            [1.0, -1.0, -1.0, 0.5],
            [1.0, 1.0, -1.0, -0.5],
            [1.0, -1.0, 1.0, -0.5],
            [1.0, 1.0, -1.0, 0.0],
        ]
    )  # sign sums: 5, 1, -3, 0
    np.testing.assert_array_equal(robust_lr(updates, 3).numpy(), [1, -1, 1, -1])
    np.testing.assert_array_equal(robust_lr(updates, 5).numpy(), [1, -1, -1, -1])


def test_rlr_aggregate_is_fedavg_with_the_walked_back_coordinates_negated():
    updates = torch.tensor([[2.0, 1.0], [2.0, -3.0], [2.0, 1.0]])
    weights = torch.tensor([1.0, 1.0, 2.0])
    d = pr.defenses.get("rlr")
    assert d.vote_threshold(3) == 2
    res = d.aggregate(updates, weights, None)
    # FedAvg: (2, 0); signs 3 and 1 → coordinate 1 negated (of a zero mean here, so (2, -0))
    torch.testing.assert_close(res.update, torch.tensor([2.0, -0.0]))
    assert res.info == {"negated_share": 0.5}


def test_rlr_refuses_a_threshold_no_round_can_reach():
    with pytest.raises(ValueError, match="exceeds fl.clients_per_round=5"):
        pr.load_config("quick", defense={"name": "rlr", "params": {"threshold": 6}})
    assert pr.load_config("quick", defense={"name": "rlr", "params": {"threshold": 5}}).defense.name == "rlr"


def test_fltrust_trusts_by_relu_cosine_and_rescales_to_the_root_norm():
    from paper_repro.defenses.fltrust import fltrust_combine

    # cosines 1, 0, -1 → trust 1, 0, 0: only the first counts, rescaled to ‖root‖ = 2
    update, trust = fltrust_combine(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(trust, torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(update, torch.tensor([2.0, 0.0]))
    # cosines 1/√2 and 1; normalised (1/√2, 1/√2) and (1, 0): ((1/2, 1/2) + (1, 0)) / (1 + 1/√2)
    update, _ = fltrust_combine(torch.tensor([[1.0, 1.0], [3.0, 0.0]]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(update, torch.tensor([1.5, 0.5]) / (1 + 2**-0.5))
    update, trust = fltrust_combine(torch.tensor([[-1.0, 0.0]]), torch.tensor([1.0, 0.0]))
    assert not trust.any() and not update.any()  # no one trusted: the global model stays


def test_fltrust_flags_the_client_that_points_away_from_the_server():
    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import LocalTraining, RoundContext

    syn, _ = make_synthetic_blobs(40, 10, size=6, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    u = torch.randn(370, generator=torch.Generator().manual_seed(1))
    ctx = RoundContext(
        1, np.array([3, 8]), model, syn, torch.Generator().manual_seed(0), local=LocalTraining(1, 0.1, 0, 8)
    )
    res = pr.defenses.get("fltrust", root_size=20).aggregate(torch.stack([u, -u]), torch.ones(2), ctx)
    assert len(res.flagged) == 1  # u and −u: exactly one points towards the server's root update
    trusted = u if res.flagged == [8] else -u
    assert torch.nn.functional.cosine_similarity(res.update, trusted, dim=0) == pytest.approx(1.0)
    assert 0 < res.info["mean_trust"] <= 0.5
    with pytest.raises(ValueError, match="local-training settings"):
        pr.defenses.get("fltrust").aggregate(torch.stack([u, -u]), torch.ones(2), dataclasses.replace(ctx, local=None))


def test_fltrust_trains_its_root_for_as_many_steps_as_a_mean_client(monkeypatch):
    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import LocalTraining, RoundContext
    from paper_repro.defenses import fltrust as ft

    np.testing.assert_array_equal(ft.root_schedule(np.array([4, 2, 9]), 7), [4, 2, 9, 4, 2, 9, 4])
    np.testing.assert_array_equal(ft.root_schedule(np.array([4, 2, 9]), 1), [4, 2, 9])  # each at least once
    syn, _ = make_synthetic_blobs(40, 10, size=6, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    seen = []

    def fake_train(model, x, y, *a, **k):
        seen.append(x)
        return ft.flat_state(model)

    monkeypatch.setattr(ft, "local_train", fake_train)
    ctx = RoundContext(
        1, np.array([3, 8]), model, syn, torch.Generator().manual_seed(0), local=LocalTraining(1, 0.1, 0, 8)
    )
    u = torch.randn(2, 370, generator=torch.Generator().manual_seed(1))
    pr.defenses.get("fltrust", root_size=20).aggregate(u, torch.tensor([300.0, 500.0]), ctx)
    x = seen[0].reshape(len(seen[0]), -1)
    assert len(x) == 400  # the round's mean client: 400 examples, so one epoch is 50 steps of 8 as a client's
    assert len(torch.unique(x, dim=0)) <= 20  # drawn from the 20 root examples only
    with pytest.raises(ValueError, match="fl.weighting='samples'"):
        pr.load_config("quick", defense={"name": "fltrust"}, fl={"weighting": "uniform"})


def test_deepsight_energies_and_threshold_exceedings_by_hand():
    from paper_repro.defenses.deepsight import co_membership, neups, threshold_exceedings

    # e = (Σ|Δw| + |Δb|)²: (1 + 1)², (1 + 1)², 0 → NEUPs 0.5, 0.5, 0
    np.testing.assert_allclose(
        neups(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1.0, 0])), [0.5, 0.5, 0]
    )
    assert threshold_exceedings(np.array([0.5, 0.5, 0.0])) == 2  # ξ = 1/3 · 0.5
    assert threshold_exceedings(np.full(10, 0.1)) == 10  # spread evenly: every label exceeds ξ = 0.01
    assert threshold_exceedings(np.r_[0.9, np.full(9, 0.1 / 9)]) == 1  # concentrated on one label: ξ = 0.09
    dist = co_membership([np.array([0, 0, 1]), np.array([0, 1, 1])])
    np.testing.assert_allclose(dist, [[0, 0.5, 1], [0.5, 0, 0.5], [1, 0.5, 0]])
    from paper_repro.defenses.deepsight import ensemble_distance

    # clients 0 and 1: together for the cosine clustering, apart in 2 of 3 DDif seeds, apart for NEUPs:
    # (0 + 2/3 + 1) / 3 = 5/9 (five labelings weighted equally would give 3/5)
    ddifs = [np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0, 1, 1])]
    d = ensemble_distance(np.array([0, 0, 1]), ddifs, np.array([0, 1, 1]))
    assert d[0, 1] == pytest.approx(5 / 9) and d[0, 2] == pytest.approx(1.0) and d[1, 2] == pytest.approx(4 / 9)


def test_deepsight_rejects_the_update_whose_output_energy_sits_on_one_label():
    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import RoundContext

    syn, _ = make_synthetic_blobs(40, 10, size=6, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    g = torch.Generator().manual_seed(0)
    # benign: a shared direction plus noise, energy on every label (independent noise alone gives HDBSCAN no benign
    # cluster to find among so few updates)
    updates = torch.randn(370, generator=g) * 0.01 + torch.randn(8, 370, generator=g) * 0.003
    updates[7] = 0.0
    updates[7, :36], updates[7, 360] = 0.5, 0.5  # label 0's weights and bias only
    ctx = RoundContext(1, np.arange(8) * 2 + 1, model, syn, torch.Generator().manual_seed(0))
    res = pr.defenses.get("deepsight").aggregate(updates, torch.ones(8), ctx)
    assert res.flagged == [15] and res.info == {"suspicious": 1}
    bound = torch.linalg.vector_norm(updates, dim=1).median()
    assert torch.linalg.vector_norm(res.update) <= bound + 1e-6  # the accepted updates clipped to the median norm


def test_class_conditional_bounds_clip_each_image_with_its_predicted_class_bounds():
    from paper_repro.defenses.act_bound_cc import ClassBoundedModel, class_bounds

    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[2].weight.copy_(torch.eye(2))  # logits = relu(x): the brighter pixel is the class
    x = torch.tensor([[3.0, 0.5], [5.0, 1.0], [0.2, 4.0], [1.0, 6.0]]).view(4, 1, 1, 2)
    bounds, fallback = class_bounds(model, x, ["1"], "neuron", 1.0, 2, 2)
    torch.testing.assert_close(bounds["1"], torch.tensor([[5.0, 1.0], [1.0, 6.0]]))  # max per predicted class
    assert fallback == []
    out = ClassBoundedModel(model, bounds)(torch.tensor([[4.0, 3.0], [0.5, 7.0]]).view(2, 1, 1, 2))
    # image 1 is class 0 → clipped to (5, 1); image 2 is class 1 → clipped to (1, 6); global bounds (5, 6) would
    # have left image 1's second unit at 3
    torch.testing.assert_close(out, torch.tensor([[4.0, 1.0], [0.5, 6.0]]))
    _, fallback = class_bounds(model, x, ["1"], "neuron", 1.0, 3, 2)
    assert fallback == [0, 1]  # two images each: below min_images, both take the bounds of all four


def test_the_fitting_subset_varies_with_the_run_only_when_asked():
    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import RoundContext

    syn, _ = make_synthetic_blobs(40, 10, size=6, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(36, 10))

    def fitted(fit_draw, run_seed):
        ctx = RoundContext(3, np.array([0]), model, syn, torch.Generator().manual_seed(run_seed))
        return pr.defenses.get("act_bound", per_class=2, fit_draw=fit_draw).fit_data(ctx)

    torch.testing.assert_close(fitted("round", 0), fitted("round", 1))  # the round alone: every seed the same
    assert not torch.equal(fitted("run", 0), fitted("run", 1))
    torch.testing.assert_close(fitted("run", 2), fitted("run", 2))  # repeatable
    assert len(fitted("run", 0)) == 2 * syn.num_classes  # still two per label


def test_fusion_hooks_bound_the_teachers_and_the_student_when_asked():
    from contextlib import contextmanager

    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import RoundContext
    from paper_repro.models import flat_state
    from paper_repro.training import distill, ensemble_logits

    syn, _ = make_synthetic_blobs(40, 10, size=6, seed=0)
    x = syn.tensors()[0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 10))
    entered = []

    @contextmanager
    def silence(m):  # the ReLU's output zeroed: every teacher then predicts the last layer's bias
        entered.append(m)
        h = m[2].register_forward_hook(lambda _m, _i, out: out * 0)
        try:
            yield
        finally:
            h.remove()

    states = torch.stack([flat_state(model)] * 2)
    plain, silenced = ensemble_logits(model, states, x), ensemble_logits(model, states, x, context=silence)
    torch.testing.assert_close(silenced, model[3].bias.detach().expand_as(silenced))
    assert not torch.allclose(plain, silenced) and len(entered) == 2  # once per teacher
    student = distill(
        copy.deepcopy(model), x, syn.tensors()[1], plain, 1, 0.01, 0.0, 20, 0.5, 1.0, torch.Generator(), context=silence
    )
    assert len(entered) == 3 and not student[2]._forward_hooks  # entered around the distillation, then removed

    ctx = RoundContext(1, np.array([0]), model, syn, torch.Generator().manual_seed(0))
    off = pr.defenses.get("act_bound", sites=["2"])
    assert off.fusion_hooks(ctx) is None and off.trains_like_none
    both = pr.defenses.get("act_bound", sites=["2"], fusion="both", init_quantile=0.5, per_class=2)
    hooks = both.fusion_hooks(ctx)
    assert hooks.teacher is not None and hooks.student is not None and not both.trains_like_none
    teachers = pr.defenses.get("act_bound", sites=["2"], fusion="teachers").fusion_hooks(ctx)
    assert teachers.student is None
    with hooks.teacher(model):  # bounded at the median of each unit: outputs change, and the hooks go away after
        bounded = model(x)
    assert not torch.allclose(bounded, model(x)) and not model[2]._forward_hooks


def test_act_bound_reports_how_far_fitting_moved_its_bounds():
    from paper_repro.data import make_synthetic_blobs
    from paper_repro.defenses import RoundContext
    from paper_repro.defenses.act_bound import bound_shift

    assert bound_shift({"a": torch.tensor([1.0, 2.0])}, {"a": torch.tensor([1.5, 2.0])}) == pytest.approx(0.5 / 3)
    syn, _ = make_synthetic_blobs(40, 10, size=6, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 10))
    ctx = RoundContext(1, np.array([0]), model, syn, torch.Generator().manual_seed(0))
    still = pr.defenses.get("act_bound", sites=["2"], epochs=0)
    still.after_fusion(model, ctx)
    assert still.info == {"bound_shift": 0.0}  # no refinement: the bounds are the quantiles
    moved = pr.defenses.get("act_bound", sites=["2"], epochs=5, lr=0.1)
    moved.after_fusion(model, ctx)
    assert moved.info["bound_shift"] > 0
