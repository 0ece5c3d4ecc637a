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
    assert {"none", "classic", "fm", "both", "model_replacement", "dba", "neurotoxin"} <= set(pr.attacks.names())
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
    assert not (bars[0] & bars[1]).any() and (sum(bars) == pr.attacks.config_trigger(cfg).apply(data.x)[0, 0]
                                              .astype(bool)).all()
    with pytest.raises(ConfigError, match="attack.trigger='dba'"):
        pr.load_config("smoke", attack={"kind": "dba"})


def test_model_replacement_scales_by_the_round_size():
    cfg, att = _attack("model_replacement")
    k = sorted(att.malicious)[0]
    u = torch.ones(3)
    assert torch.equal(att.craft_update(k, u), u * cfg.fl.clients_per_round)


def test_neurotoxin_zeroes_the_coordinates_the_global_model_moved_most():
    cfg, att = _attack("neurotoxin", params={"mask_ratio": 0.25}, boost=1.0)
    k = sorted(att.malicious)[0]
    att.begin_round(1, torch.zeros(8))
    assert torch.equal(att.craft_update(k, torch.ones(8)), torch.ones(8))  # round 1: nothing to estimate from
    att.begin_round(2, torch.tensor([0.0, 5, 0, 0, 0, 0, -9, 0]))
    out = att.craft_update(k, torch.ones(8))
    assert out.tolist() == [1, 0, 1, 1, 1, 1, 0, 1]
    benign = next(c for c in range(cfg.fl.num_clients) if not att.is_malicious(c))
    assert torch.equal(att.craft_update(benign, torch.ones(8)), torch.ones(8))
    with pytest.raises(ConfigError, match="accepted"):
        pr.load_config("smoke", attack={"kind": "neurotoxin", "params": {"ratio": 0.1}})
    with pytest.raises(ConfigError, match="mask_ratio"):
        pr.load_config("smoke", attack={"kind": "neurotoxin", "params": {"mask_ratio": "x"}})


def test_the_selection_rule_takes_the_lowest_asr_within_the_accuracy_budget():
    import pandas as pd

    from paper_repro.studies.heldout import select_variant

    rows = []
    for seed in (0, 1):
        rows += [{"setting": "validation", "attack": "fm", "seed": seed, "defense": d, "acc": acc, "asr": asr}
                 for d, acc, asr in (("none", 0.85, 0.9), ("a", 0.84, 0.10), ("b", 0.80, 0.01), ("c", 0.845, 0.105))]
    best, table = select_variant(pd.DataFrame(rows))
    assert best == "c"  # b is cheapest in ASR but costs 5 points; a and c tie within 0.01, c costs less
    assert table.set_index("defense").loc["b", "eligible"] == False  # noqa: E712
    with pytest.raises(ValueError, match="no variant"):
        select_variant(pd.DataFrame(rows), max_cost=0.001)
