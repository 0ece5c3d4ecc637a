"""The attacks of the literature, one by one, on tiny inputs: what each malicious client does differently."""

import numpy as np
import pytest
import torch

import paper_repro as pr
from paper_repro.config import ConfigError
from paper_repro.data import ImageSet


def _attack(kind, **attack):
    cfg = pr.load_config("smoke", attack={"kind": kind, "num_malicious": 4, "client_poison_ratio": 1.0, **attack})
    return cfg, pr.attacks.build(cfg)


def test_every_attack_is_listed_and_built_from_the_registry():
    assert {
        "none",
        "classic",
        "fm",
        "both",
        "model_replacement",
        "dba",
        "neurotoxin",
        "adaptive_decoys",
        "fm_generated",
        "fm_bound_aware",
    } <= set(pr.attacks.names())
    for kind in pr.attacks.names():
        trig = {"trigger": "dba"} if kind == "dba" else {}
        assert type(_attack(kind, **trig)[1]) is pr.attacks.REGISTRY[kind]


def test_dba_gives_each_malicious_client_one_bar_and_is_tested_with_all_four():
    cfg, att = _attack("dba", trigger="dba")
    data = ImageSet(np.zeros((4, 1, 12, 12), np.uint8), np.array([1, 2, 3, 4]), tuple("abcdefghij"))
    bars = []
    for k in sorted(att.malicious):
        lit = att.local_data(k, data).x[0, 0] == 255
        assert lit.sum() == 4 and len(set(np.flatnonzero(lit.any(1)))) == 1  # one 1×4 bar
        bars.append(lit)
    assert (
        not (bars[0] & bars[1]).any()
        and (sum(bars) == pr.attacks.config_trigger(cfg).apply(data.x)[0, 0].astype(bool)).all()
    )
    with pytest.raises(ConfigError, match="attack.trigger='dba'"):
        pr.load_config("smoke", attack={"kind": "dba"})


def test_model_replacement_scales_by_the_round_size():
    cfg, att = _attack("model_replacement")
    k = sorted(att.malicious)[0]
    u = torch.ones(3)
    assert torch.equal(att.craft_update(k, u), u * cfg.fl.clients_per_round)


def _tiny_model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(40, 1, 3, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    return model, x, y


def _train(model, x, y, objective=None):
    from paper_repro.training import local_train

    return local_train(model, x, y, 2, 0.1, 0.9, 8, torch.Generator().manual_seed(1), objective=objective)


def test_neurotoxin_projects_every_local_step_off_the_coordinates_the_global_model_moved_most():
    from paper_repro.models import flat_state

    cfg, att = _attack("neurotoxin", params={"mask_ratio": 0.25}, boost=1.0)
    k = sorted(att.malicious)[0]
    benign = next(c for c in range(cfg.fl.num_clients) if not att.is_malicious(c))
    model, x, y = _tiny_model_and_data()
    g0 = flat_state(model)
    att.begin_round(1, g0)
    assert att.local_objective(k) is None  # round 1: no global change to estimate the benign direction from
    change = torch.zeros_like(g0)
    change[torch.arange(0, len(g0), 4)] = torch.linspace(1, 2, len(range(0, len(g0), 4)))  # every 4th moved
    att.begin_round(2, g0 + change)
    assert att.local_objective(benign) is None
    masked = change.abs() >= torch.topk(change.abs(), int(0.25 * len(g0))).values.min()
    theta = _train(model, x, y, att.local_objective(k))
    honest = _train(model, x, y)
    d = theta - g0
    assert torch.equal(d[masked], torch.zeros(int(masked.sum())))  # those coordinates never moved
    assert (d[~masked] != 0).float().mean() > 0.9
    # projected per step, not masked at the end: the other coordinates differ from an honest run's
    assert not torch.allclose(d[~masked], (honest - g0)[~masked])
    assert torch.equal(att.craft_update(k, d), d)  # the finished update is sent as trained (boost 1)


def test_neurotoxin_norm_bound_keeps_every_step_within_the_ball():
    from paper_repro.models import flat_state

    _, att = _attack("neurotoxin", params={"mask_ratio": 0.0, "norm_bound": 0.05})
    k = sorted(att.malicious)[0]
    model, x, y = _tiny_model_and_data()
    g0 = flat_state(model)
    att.begin_round(1, g0)
    free = (_train(model, x, y) - g0).norm()
    bounded = (_train(model, x, y, att.local_objective(k)) - g0).norm()
    assert free > 0.1 and bounded == pytest.approx(0.05, rel=1e-4)
    with pytest.raises(ConfigError, match="accepted"):
        pr.load_config("smoke", attack={"kind": "neurotoxin", "params": {"ratio": 0.1}})
    with pytest.raises(ConfigError, match="mask_ratio"):
        pr.load_config("smoke", attack={"kind": "neurotoxin", "params": {"mask_ratio": "x"}})


def test_constrain_and_scale_trains_closer_to_the_global_model_and_caps_the_sent_norm():
    from paper_repro.models import flat_state

    cfg, plain = _attack("model_replacement")
    _, cs = _attack("model_replacement", params={"anomaly_weight": 0.5, "norm_bound": 0.3})
    k = sorted(plain.malicious)[0]
    assert plain.local_objective(k) is None
    model, x, y = _tiny_model_and_data()
    g0 = flat_state(model)
    d_plain, d_cs = _train(model, x, y) - g0, _train(model, x, y, cs.local_objective(k)) - g0
    assert d_cs.norm() < 0.9 * d_plain.norm()  # the anomaly loss pulls the local model toward G
    sent = cs.craft_update(k, d_cs)
    n = cfg.fl.clients_per_round
    assert sent.norm() == pytest.approx(min(0.3, n * float(d_cs.norm())), rel=1e-5)
    small = torch.full((4,), 1e-3)
    assert torch.allclose(cs.craft_update(k, small), small * n)  # within the bound: the full γ = n
    benign = next(c for c in range(cfg.fl.num_clients) if not cs.is_malicious(c))
    assert cs.local_objective(benign) is None and torch.equal(cs.craft_update(benign, small), small)


@pytest.mark.unit
def test_the_batched_engine_trains_clients_with_an_objective_as_the_loop_does():
    from paper_repro.local_training import batched_local_train, threaded_local_train
    from paper_repro.training import LocalObjective

    class Freeze(LocalObjective):  # zero every gradient: the client must not move at all
        def gradients(self, model):
            for p in model.parameters():
                p.grad.zero_()

    model, x, y = _tiny_model_and_data()
    data = [(x[:20], y[:20]), (x[20:], y[20:]), (x, y)]
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    objs = [None, Freeze(), None]
    b = batched_local_train(model, data, 1, 0.1, 0.9, 8, gens(), objectives=objs)
    t = threaded_local_train(model, data, 1, 0.1, 0.9, 8, gens(), objectives=objs)
    plain = batched_local_train(model, data, 1, 0.1, 0.9, 8, gens())
    from paper_repro.models import flat_state

    assert torch.equal(b[1], flat_state(model)) and torch.equal(t[1], flat_state(model))
    assert torch.allclose(b[[0, 2]], plain[[0, 2]], atol=1e-6) and torch.allclose(t, b, atol=1e-5)
    with pytest.raises(ValueError, match="local objectives"):
        threaded_local_train(model, data, 1, 0.1, 0.9, 8, gens(), objectives=objs[:2])


def test_the_selection_rule_takes_the_lowest_asr_within_the_accuracy_budget():
    import pandas as pd

    from paper_repro.studies.heldout import select_variant

    rows = []
    for seed in (0, 1):
        rows += [
            {"setting": "validation", "attack": "fm", "seed": seed, "defense": d, "acc": acc, "asr": asr}
            for d, acc, asr in (("none", 0.85, 0.9), ("a", 0.84, 0.10), ("b", 0.80, 0.01), ("c", 0.845, 0.105))
        ]
    best, table = select_variant(pd.DataFrame(rows))
    assert best == "c"  # b is cheapest in ASR but costs 5 points; a and c tie within 0.01, c costs less
    assert table.set_index("defense").loc["b", "eligible"] == False  # noqa: E712
    with pytest.raises(ValueError, match="no variant"):
        select_variant(pd.DataFrame(rows), max_cost=0.001)


def test_adaptive_decoys_decoys_draw_noise_and_the_carrier_scale_follows_acceptance():
    cfg, att = _attack("adaptive_decoys", boost=4.0, params={"num_decoys": 1, "decoy_scale": 5.0, "max_scale": 16.0})
    ranked = sorted(att.malicious)
    carrier, decoy = ranked[0], ranked[-1]
    assert att.decoys == {decoy} and carrier not in att.decoys  # roles by rank, never all decoys
    g0 = torch.zeros(50)
    att.begin_round(1, g0)
    u = torch.randn(50, generator=torch.Generator().manual_seed(0))
    d = att.craft_update(decoy, u)
    assert abs(float((d - u).norm() / u.norm()) - 5.0) < 1e-4  # noise of decoy_scale x the update's norm
    assert float(torch.nn.functional.cosine_similarity(d, u, 0)) < 0.5  # an outlier for a cosine-based defense
    sent = att.craft_update(carrier, u)
    assert torch.allclose(sent, 4.0 * u)
    n = cfg.fl.clients_per_round
    g2 = g0 + sent / n
    att.begin_round(2, g2)  # the global model moved by its full share: accepted
    assert att.scale[carrier] == 8.0 and att.log[-1]["acceptance"] == pytest.approx(1.0, abs=1e-4)
    att.craft_update(carrier, u)
    att.begin_round(3, g2)  # no change at all: rejected
    assert att.scale[carrier] == 4.0 and att.log[-1]["acceptance"] == pytest.approx(0.0, abs=1e-4)
    benign = next(c for c in range(cfg.fl.num_clients) if not att.is_malicious(c))
    assert torch.equal(att.craft_update(benign, u), u)
    _, alone = _attack("adaptive_decoys", num_malicious=1, params={"num_decoys": 3})
    assert not alone.decoys  # a single malicious client always carries the backdoor
    with pytest.raises(ConfigError, match="decoy_scale"):
        pr.load_config("smoke", attack={"kind": "adaptive_decoys", "params": {"decoy_scale": 0.0}})


def test_bound_aware_trigger_is_a_bounded_pattern_the_asr_images_carry():
    from paper_repro.attacks.fm_bound_aware import PatternTrigger
    from paper_repro.inputs import prepare

    x = np.array([[[[0, 250, 128]]]], np.uint8)
    assert PatternTrigger(np.array([[[-5.0, 9.6, 0.4]]])).apply(x).tolist() == [[[[0, 255, 128]]]]
    cfg = pr.load_config("smoke", attack={"kind": "fm_bound_aware", "params": {"steps": 10, "epsilon": 0.05}})
    with pytest.raises(RuntimeError, match="poison_synthetic"):
        pr.attacks.build(cfg).asr_trigger(cfg)
    prep = prepare(cfg, progress=False)
    att, inp = prep.inputs.attack, prep.inputs
    delta = att.trigger.delta
    assert np.abs(delta).max() <= 0.05 * 255 + 1e-3 and np.abs(delta).max() > 0  # optimised, within its budget
    idx = prep.fm_poisoned
    assert len(idx) and (inp.synthetic_kd.y[idx] == cfg.attack.target_class).all()
    changed = inp.synthetic_kd.x[idx].astype(int) - prep.synthetic_clean.x[idx].astype(int)
    assert np.abs(changed).max() <= np.ceil(0.05 * 255)
    clean_test = pr.data.public_splits(cfg).test
    keep = clean_test.y != cfg.attack.target_class
    assert np.array_equal(inp.asr_test.x, att.trigger.apply(clean_test.x[keep]))
    assert {"pattern_over_bounds", "clean_over_bounds", "pattern_to_target"} <= set(att.info)


def test_fm_generated_draws_into_the_target_slots_only_and_is_cached(monkeypatch, tmp_path):
    from paper_repro.attacks.fm_generated import FMGenerated
    from paper_repro.inputs import prepare

    monkeypatch.setenv("PAPER_REPRO_CACHE", str(tmp_path))
    cfg = pr.load_config("smoke", attack={"kind": "fm_generated", "params": {"finetune_steps": 3}})
    prep = prepare(cfg, progress=False)
    t = cfg.attack.target_class
    clean, syn = prep.synthetic_clean, prep.inputs.synthetic_kd
    other = clean.y != t
    assert np.array_equal(syn.x[other], clean.x[other]) and np.array_equal(syn.y, clean.y)  # labels never change
    assert not np.array_equal(syn.x[~other], clean.x[~other])  # the target class was drawn again
    assert set(prep.fm_poisoned) <= set(np.flatnonzero(~other))
    att = prep.inputs.attack
    patched = att.trigger.apply(clean.x[:5])
    assert att.carries_trigger(patched).all() and not att.carries_trigger(clean.x[:5] // 4).any()
    assert att.info["finetune_seconds"] >= 0
    monkeypatch.setattr(FMGenerated, "finetuned", lambda *a: pytest.fail("the cached draw was not served"))
    again = prepare(cfg, progress=False)
    assert np.array_equal(again.inputs.synthetic_kd.x, syn.x)
    with pytest.raises(ConfigError, match="all_to_one"):
        pr.load_config("smoke", attack={"kind": "fm_generated", "mapping": "all_to_all"})


@pytest.mark.smoke
def test_attack_studies_write_their_tables_and_the_trigger_gallery(tmp_path):
    from paper_repro.studies import attacks as st

    df = st.attack_breadth(
        "smoke",
        ("FM patch", "data poisoning"),
        ("none", "median"),
        (0,),
        results_dir=tmp_path,
        tables_dir=tmp_path,
        progress=False,
    )
    assert len(df) == 4 and (tmp_path / "attack_breadth_smoke.csv").is_file()
    assert (tmp_path / "attack_breadth_smoke.provenance.json").is_file()
    best = st.best_defense(df, max_cost=1.0)
    assert list(best["attack"]) == ["FM patch", "data poisoning"] and set(best["best"]) <= {"median", "none"}
    ex = st.trigger_examples("smoke", ("FM patch", "DBA"), n=3, seed=0, path=tmp_path / "t.npz")
    assert ex["DBA/train"].shape[0] == 3 and ex["FM patch/test"].shape == (3, 1, 12, 12)
    assert set(np.load(tmp_path / "t.npz").files) == set(ex)
    fig = pr.plots.trigger_gallery(ex)
    assert len(fig.axes) == 2 * (3 + 1 + 3)
    with pytest.raises(ValueError, match="unknown attacks"):
        st.attack_breadth("smoke", ("FM nothing",))


@pytest.mark.unit
def test_best_defense_follows_the_protocol_rule_with_no_defense_a_candidate():
    import pandas as pd

    from paper_repro.studies import attacks as st

    rows = []
    for seed in (0, 1):
        for attack, d, asr, acc in [
            ("A", "none", 0.90, 0.80),
            ("A", "costly", 0.10, 0.70),  # 10 points of ACC: beyond the 2-point budget
            ("A", "cheap", 0.85, 0.79),
            ("B", "none", 0.30, 0.80),
            ("B", "worse", 0.50, 0.80),  # raises ASR: no defense is the best
            ("C", "none", 0.926, 0.80),
            ("C", "no-op", 0.927, 0.8001),  # a hair "cheaper" than none, same ASR: not better than no defense
            ("C", "slight", 0.920, 0.80),  # within the 0.01 tie of none: not better either
        ]:
            rows.append({"attack": attack, "defense": d, "seed": seed, "asr": asr + seed / 100, "acc": acc})
    best = st.best_defense(pd.DataFrame(rows)).set_index("attack")
    assert best.loc["A", "best"] == "cheap" and best.loc["A", "best_cost"] == pytest.approx(0.01)
    assert best.loc["B", "best"] == "none" and best.loc["C", "best"] == "none"


def test_strength_threshold_names_the_weakest_value_reaching_the_level():
    import pandas as pd

    from paper_repro.studies import attacks as st

    rows = [("poison share", v, "none", a) for v, a in (("0.05", 0.1), ("0.1", 0.95), ("0.2", 0.92), ("0.4", 1.0))]
    rows += [("poison share", v, "act_bound", 0.05) for v in ("0.05", "0.1", "0.2", "0.4")]
    df = pd.DataFrame(rows, columns=["knob", "value", "defense", "asr"])
    out = st.strength_threshold(df).set_index("defense")
    assert out.loc["none", "ASR ≥ 0.9 from"] == "0.1" and out.loc["act_bound", "ASR ≥ 0.9 from"] == "never"


def test_adaptive_table_reads_act_bound_against_no_defense_per_adaptive_attack():
    import pandas as pd

    from paper_repro.studies import attacks as st

    rows = [("FM SIG", d, s, 0.8, a) for d, a in (("none", 0.2), ("act_bound", 0.4)) for s in (10, 11)]
    rows += [("FM patch", "none", s, 0.85, 0.9) for s in (10, 11)]
    breadth = pd.DataFrame(rows, columns=["attack", "defense", "seed", "acc", "asr"])
    strength = pd.DataFrame(
        [
            ("poison share", v, d, 10, 0.8, a)
            for v, d, a in (("0.2", "none", 0.9), ("0.4", "none", 0.95), ("0.4", "act_bound", 0.5))
        ],
        columns=["knob", "value", "defense", "seed", "acc", "asr"],
    )
    out = st.adaptive_table(breadth, strength).set_index("attack")
    assert list(out.index) == ["FM SIG", "FM patch, poison share 0.4"]  # only adaptive attacks, plus the share
    assert out.loc["FM SIG", "none_asr"] == pytest.approx(0.2) and out.loc["FM SIG", "act_bound_asr"] == 0.4
    assert out.loc["FM patch, poison share 0.4", "act_bound_asr"] == 0.5
    assert out.loc["FM patch, poison share 0.4", "n"] == 1


@pytest.mark.smoke
def test_a_run_folder_records_what_the_attack_reports(tmp_path):
    import json

    cfg = pr.load_config("smoke", attack={"kind": "adaptive_decoys", "num_malicious": 3, "boost": 2.0})
    res = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    rec = json.loads((res.run_dir / "config.json").read_text())["attack"]
    assert set(rec) <= {"info", "log"} and all({"round", "client", "acceptance"} <= set(e) for e in rec.get("log", []))
    cfg = pr.load_config("smoke", attack={"kind": "fm_bound_aware", "params": {"steps": 5}})
    res = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    info = json.loads((res.run_dir / "config.json").read_text())["attack"]["info"]
    assert {"seconds", "pattern_over_bounds", "clean_over_bounds"} <= set(info)


def test_both_poisons_its_clients_with_the_configured_mapping_as_classic_does():
    # 'both' = the FM attack + the classic clients; its clients must relabel as the config says (here all-to-all),
    # since ASR is measured with that mapping
    from paper_repro.data import public_splits

    kw = {"attack": {"mapping": "all_to_all", "client_poison_ratio": 0.5}}
    both = pr.attacks.build(pr.load_config("smoke", **{"attack": {**kw["attack"], "kind": "both"}}))
    classic = pr.attacks.build(pr.load_config("smoke", **{"attack": {**kw["attack"], "kind": "classic"}}))
    assert both.malicious == classic.malicious and both.mapping == "all_to_all"
    k = min(both.malicious)
    data = public_splits(pr.load_config("smoke")).clients.subset(np.arange(60))
    a, b = both.local_data(k, data), classic.local_data(k, data)
    assert (a.y == b.y).all() and (a.x == b.x).all()
    assert len(set(a.y[a.y != data.y].tolist())) > 1  # all-to-all: relabelled to more than one class


@pytest.mark.unit
@pytest.mark.parametrize("per_round", [1, 2])
def test_a_fixed_schedule_puts_exactly_that_many_attackers_in_every_round(per_round):
    from paper_repro.fl import sample_clients

    cfg = pr.load_config("quick", attack={"kind": "classic", "schedule": "fixed", "attackers_per_round": per_round})
    mal = pr.attacks.build(cfg).malicious
    rng = np.random.default_rng(0)
    rounds = [sample_clients(cfg, rng, mal) for _ in range(50)]
    assert all(len(set(ids)) == cfg.fl.clients_per_round for ids in rounds)
    assert [sum(int(k) in mal for k in ids) for ids in rounds] == [per_round] * 50
    assert len({int(k) for ids in rounds for k in ids if k in mal}) == len(mal)  # every attacker takes turns
    sampled = pr.load_config("quick", attack={"kind": "classic"})
    counts = {sum(int(k) in mal for k in sample_clients(sampled, rng, mal)) for _ in range(200)}
    assert len(counts) > 2  # sampled participation: the number per round varies


@pytest.mark.unit
@pytest.mark.parametrize(
    "attack, needle",
    [
        ({"kind": "fm", "schedule": "fixed"}, "no malicious clients"),
        ({"kind": "classic", "schedule": "fixed", "attackers_per_round": 5}, "num_malicious=4"),
        ({"kind": "classic", "schedule": "fixed", "num_malicious": 18, "attackers_per_round": 1}, "benign"),
        ({"kind": "classic", "schedule": "sometimes"}, "schedule"),
    ],
)
def test_a_schedule_that_cannot_be_kept_is_refused(attack, needle):
    with pytest.raises(pr.ConfigError, match=needle):
        pr.load_config("quick", attack=attack)


@pytest.mark.smoke
def test_every_round_records_its_attackers(tmp_path):
    cfg = pr.load_config("smoke", attack={"kind": "classic", "num_malicious": 2, "schedule": "fixed"})
    h = pr.run_experiment(cfg, results_dir=tmp_path, progress=False).history
    assert h["num_attackers"].iloc[1:].tolist() == [1] * cfg.fl.num_rounds
    none = pr.run_experiment(pr.load_config("smoke"), results_dir=tmp_path, progress=False).history
    assert none["num_attackers"].iloc[1:].eq(0).all()


@pytest.mark.smoke
def test_an_attack_that_stops_leaves_honest_rounds_after_its_last_round(tmp_path):
    attack = {"kind": "neurotoxin", "num_malicious": 2, "schedule": "fixed", "client_poison_ratio": 1.0}
    cfg = pr.load_config("smoke", attack=attack)
    stop = pr.load_config("smoke", attack={**attack, "last_round": 1})
    h = pr.run_experiment(cfg, results_dir=tmp_path, progress=False).history
    hs = pr.run_experiment(stop, results_dir=tmp_path, progress=False).history
    assert hs["num_attackers"].iloc[1:].tolist() == [1] + [0] * (cfg.fl.num_rounds - 1)
    assert hs.loc[1, "asr"] == h.loc[1, "asr"]  # round 1: the same attack
    assert (hs["acc"].iloc[2:] != h["acc"].iloc[2:]).any()  # afterwards the attacker trains honestly
    from paper_repro.metrics import summarise

    s = summarise(hs)
    assert s["attackers_mean"] == pytest.approx(1 / cfg.fl.num_rounds) and s["attackers_max"] == 1
    assert s["asr_round0"] == hs.loc[0, "asr"]


@pytest.mark.unit
@pytest.mark.parametrize("last", [-1, 99])
def test_an_attack_end_that_is_not_a_round_is_refused(last):
    with pytest.raises(pr.ConfigError, match="last_round"):
        pr.load_config("smoke", attack={"kind": "classic", "last_round": last})
