"""Defenses: registry, activation bounds (hand-checkable), MARS energy, and every defense × attack in smoke."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import paper_repro as pr
from paper_repro.activation_bounds import BoundedModel, fit_bounds, max_activations, resolve_sites
from paper_repro.data import make_synthetic_blobs
from paper_repro.defenses import RoundContext
from paper_repro.defenses.mars import MARS, backdoor_energy, concentrated_energy, w1
from paper_repro.models import build_model

VARIANTS = {
    "fm:random_patch": {"trigger": "random_patch"},
    "fm:blend": {"trigger": "blend", "blend_alpha": 0.2},  # SIG (f = 6) is zero on the 12-pixel-wide smoke images
    "fm:all_to_all": {"mapping": "all_to_all"},
}
"""The FM attack's trigger and mapping variants (attack.trigger / attack.mapping of the ``fm`` kind)."""
ATTACK_FAST = {"fm_generated": {"finetune_steps": 20}, "fm_bound_aware": {"steps": 20}}
"""Smoke-sized attack work (the attacks' defaults are the quick profile's)."""
FAST = {
    "mm_bm": {"epochs": 4, "adapt_after": 1, "adapt_every": 2},
    "mmac": {"epochs": 3, "re_steps": 3, "re_per_class": 2, "adapt_after": 1, "adapt_every": 1},
    "act_bound": {"epochs": 2},
}


def test_registry_lists_names_and_rejects_unknown_or_bad_params():
    assert {"none", "act_bound", "krum", "flame", "mars", "mm_bm", "mmac", "pruning"} <= set(pr.defenses.names())
    with pytest.raises(ValueError, match="known defenses"):
        pr.defenses.get("shield")
    with pytest.raises(ValueError, match="bad parameters"):
        pr.defenses.get("krum", wrong=1)


def _relu_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 3)
    )


def test_bounded_forward_equals_torch_minimum_of_the_activations():
    # Prepare
    net, x = _relu_net(), torch.randn(7, 1, 6, 6)
    b1, b4 = torch.rand(4) * 0.3, torch.rand(5) * 0.2
    # Execute
    out = BoundedModel(net, {"1": b1, "4": b4})(x)
    # Assert: recompute by hand with explicit minima
    a1 = torch.minimum(net[1](net[0](x)), b1.view(1, -1, 1, 1))
    a4 = torch.minimum(net[4](net[3](net[2](a1))), b4.view(1, -1))
    torch.testing.assert_close(out, net[5](a4))
    torch.testing.assert_close(net(x), net[5](net[4](net[3](net[2](net[1](net[0](x)))))))  # hooks are gone


def test_fitting_bounds_leaves_weights_bit_identical_and_lowers_the_objective():
    net, x = _relu_net(), torch.randn(64, 1, 6, 6)
    before = copy.deepcopy(net.state_dict())
    sites = resolve_sites(net, "all")
    bounded = BoundedModel(net, max_activations(net, x, sites))
    log = fit_bounds(
        bounded,
        x,
        epochs=15,
        lr=0.05,
        c0=0.5,
        growth=1.2,
        target_agreement=0.95,
        adapt_every=100,
        adapt_after=100,
        batch_size=64,
        generator=torch.Generator().manual_seed(0),
    )
    assert log["loss"][-1] < log["loss"][0]
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())
    assert all((b >= 0).all() for b in bounded.bound_dict().values())
    assert [n for n, _ in bounded.named_parameters()] == ["bounds.0", "bounds.1"]


def test_data_max_bounds_do_not_change_outputs_on_the_fitting_data():
    net, x = _relu_net(), torch.randn(32, 1, 6, 6)
    bounded = BoundedModel(net, max_activations(net, x, resolve_sites(net, "all")))
    torch.testing.assert_close(bounded(x), net(x))


def test_mars_energy_of_a_hand_built_conv_bn_layer():
    # Prepare: conv with 2 output channels; channel 0 weights = [[3, 0], [0, 4]] over (C_in=2, k=1x2) → σ_max = 4
    conv = nn.Conv2d(2, 2, (1, 2), bias=False)
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0], conv.weight[0, 1, 0, 1] = 3.0, 4.0
        conv.weight[1, 0, 0, 0] = 1.0
        bn.weight.copy_(torch.tensor([2.0, -1.0]))
        bn.running_var.copy_(torch.tensor([4.0 - bn.eps, 1.0 - bn.eps]))
    # Execute
    (be,) = backdoor_energy(nn.Sequential(conv, bn))
    # Assert: σ_max · |γ/σ|
    np.testing.assert_allclose(be, [4.0 * 2 / 2, 1.0 * 1 / 1], rtol=1e-5)


def test_mars_w1_matches_the_paper_toy_and_rejects_the_high_energy_cluster():
    l1, l2, l3 = np.array([1, 2, 3, 4, 5.0]), np.array([5, 5, 3, 2, 2.0]), np.ones(5)
    assert (round(w1(l1, l2), 2), round(w1(l1, l3), 2), round(w1(l2, l3), 2)) == (0.4, 2.0, 2.4)
    benign = [np.sort(np.array([1.0, 1.1, 1.2]) + 0.01 * i) for i in range(4)]
    bad = [np.array([1.0, 1.2, 9.0])]
    assert list(MARS().select(np.stack(benign + bad))) == [0, 1, 2, 3]
    assert len(concentrated_energy([np.arange(100.0), np.arange(10.0)], kappa=5)) == 5 + 1
    m = MARS()
    m.select(np.stack(benign + bad))
    assert m.last["centre_distance"] == pytest.approx(w1(np.mean(benign, 0), bad[0]))
    assert list(MARS(epsilon=10.0).select(np.stack(benign + bad))) == [0, 1, 2, 3, 4]  # ε above the distance


def test_client_mean_accuracy_weights_each_class_by_each_clients_share():
    from paper_repro.metrics import class_shares, client_mean_accuracy

    per_class = np.array([1.0, 0.5, 0.0])
    shares = class_shares([np.array([0, 0, 1, 1]), np.array([2, 2]), np.array([], np.int64)], 3)
    assert shares.tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert client_mean_accuracy(per_class, shares) == pytest.approx((0.75 + 0.0) / 2)  # the empty client is left out
    iid = class_shares([np.arange(3)] * 4, 3)
    assert client_mean_accuracy(per_class, iid) == pytest.approx(per_class.mean())  # IID: the class-balanced ACC


def _ctx(model, synthetic, ids=(0, 1, 2, 3, 4), rnd=1, num_rounds=1):
    return RoundContext(rnd, np.array(ids), model, synthetic, torch.Generator().manual_seed(0), "cpu", num_rounds)


def test_detectors_flag_a_wildly_scaled_update_and_report_its_id():
    train, _ = make_synthetic_blobs(200, 10)
    model = build_model("tiny", train.shape, 10, seed=0)
    P = pr.models.flat_state(model).numel()
    g = torch.Generator().manual_seed(1)
    updates = 0.01 * torch.randn(5, P, generator=g)
    updates[3] = -updates[3] * 300
    for name in ("krum", "multi_krum", "flame", "geminiguard"):
        res = pr.defenses.get(name).aggregate(updates, torch.ones(5), _ctx(model, train, ids=(10, 11, 12, 13, 14)))
        assert 13 in res.flagged, name


@pytest.mark.parametrize("name", ["pruning", "act_bound", "mm_bm", "mmac", "clp"])
def test_post_fusion_defenses_keep_the_fused_weights(name):
    train, _ = make_synthetic_blobs(200, 10)
    model = build_model("tiny", train.shape, 10, seed=0)
    before = copy.deepcopy(model.state_dict())
    served = pr.defenses.get(name, **FAST.get(name, {})).after_fusion(model, _ctx(model, train))
    assert served is not model and served(train.tensors()[0][:4]).shape == (4, 10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.smoke
@pytest.mark.parametrize("defense", sorted(set(pr.defenses.names()) - {"none"}))
@pytest.mark.parametrize("attack", [*pr.attacks.names(), *VARIANTS])
def test_every_defense_runs_against_every_attack_in_smoke(tmp_path, defense, attack):
    trigger = {"trigger": "dba"} if attack == "dba" else VARIANTS.get(attack, {})
    attack = attack.split(":")[0]
    cfg = pr.load_config(
        "smoke",
        attack={"kind": attack, **trigger, "params": ATTACK_FAST.get(attack, {})},
        defense={"name": defense, "params": FAST.get(defense, {})},
    )
    res = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    h = res.history
    assert len(h) == 3 and h[["acc", "asr"]].notna().all().all()
    assert {"tpr", "fpr", "num_flagged", "defense_seconds"} <= set(h.columns)
    rounds = h.iloc[1:]
    assert rounds["num_flagged"].between(0, cfg.fl.clients_per_round).all()
    flagged = json.loads((res.run_dir / "flagged.json").read_text())
    assert [len(f) for f in flagged] == rounds["num_flagged"].tolist()  # the saved ids match the counts
    if attack == "none" or attack.startswith("fm"):  # no malicious client sampled, ever: TPR is undefined
        assert rounds["tpr"].isna().all()


@pytest.mark.smoke
def test_act_bound_shipped_to_clients_clamps_their_training(tmp_path):
    d = pr.defenses.get("act_bound", deploy="clients", epochs=1)
    assert d.client_context() is None  # nothing to ship before the first fit
    net, x = _relu_net(), torch.randn(16, 1, 6, 6)
    d.bounds = {"1": torch.zeros(4)}
    with d.client_context()(net):
        out = net(x)
    torch.testing.assert_close(out, net[5](net[4](net[3](net[2](torch.zeros(16, 4, 6, 6))))))
    cfg = pr.load_config(
        "smoke", attack={"kind": "fm"}, defense={"name": "act_bound", "params": {"deploy": "clients", "epochs": 1}}
    )
    assert len(pr.run_experiment(cfg, results_dir=tmp_path, progress=False).history) == 3


@pytest.mark.parametrize("name", ["pruning", "act_bound", "mm_bm"])
def test_a_served_batchnorm_model_evaluates_frozen_and_changes_no_buffer(name):
    # Prepare: a small BatchNorm network in train mode, as the fused model is after distillation
    train, _ = make_synthetic_blobs(200, 10)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, 10),
    )
    model.train()
    before = copy.deepcopy(model.state_dict())
    # Execute: fit the defense, then evaluate the served model on two different batches containing image 0
    served = pr.defenses.get(name, **FAST.get(name, {})).after_fusion(model, _ctx(model, train))
    x = train.tensors()[0]
    one, other = served(x[:8]), served(torch.cat([x[:1], x[100:107]]))
    # Assert: no weight or buffer (running mean/var, batch counter) moved, and image 0's output does not depend on
    # the batch it came in (eval mode)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(one[0], other[0])
    assert model.training  # the wrapped model's own mode is restored


def test_last_conv_site_is_the_last_relu_before_the_first_fully_connected_layer():
    from paper_repro.activation_bounds import resolve_sites
    from paper_repro.models import build_model

    want = {"tiny": "relu1", "cnn": "relu2", "resnet18": "layer4.1.relu2"}
    for name, site in want.items():
        shape = (3, 32, 32) if name == "resnet18" else (1, 28, 28)
        assert resolve_sites(build_model(name, shape, 10, 0), "last_conv") == [site]


def test_krum_assumes_the_largest_f_the_round_allows_and_trimmed_mean_trims_at_five():
    from paper_repro.defenses.robust_aggregation import largest_f

    assert [largest_f(k) for k in (3, 4, 5, 10, 11)] == [0, 0, 1, 3, 4]
    u = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    out = pr.defenses.get("trimmed_mean").aggregate(u, torch.ones(5), None).update
    assert out.item() == 2.0  # the 0 and the 100 trimmed


def test_a_variant_defense_carries_its_parents_parameters_in_the_run_key():
    p = pr.defenses.resolved_params("mm_bm_neuron")
    assert p["granularity"] == "neuron" and p["init_quantile"] == 0.9 and p["epochs"] == 50
    with pytest.raises(ValueError, match="accepted"):
        pr.defenses.resolved_params("mm_bm_neuron", {"epoch": 3})
    with pytest.raises(ValueError, match="accepted"):
        pr.defenses.get("median", bogus=1)
