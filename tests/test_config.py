import pytest

import paper_repro as pr
from paper_repro.config import ConfigError
from paper_repro.profiles import config_from_dict
from paper_repro.results import run_key


@pytest.mark.parametrize("kwargs, match", [
    (dict(attack={"poison_ratio": 1.5}), r"attack.poison_ratio=1.5 is outside \[0, 1\]"),
    (dict(attack={"poison_ratio": -0.1}), "outside"),
    (dict(data={"beta": 0.0}), "beta"),
    (dict(attack={"kind": "classic", "num_malicious": 50}), "exceeds fl.num_clients"),
    (dict(attack={"trigger_size": 40}), "larger than the 28×28 image"),
    (dict(attack={"kind": "evil"}), "attack.kind='evil' is unknown"),
    (dict(fl={"lr": float("inf")}), "fl.lr=inf must be a finite number"),
    (dict(fl={"kd_temperature": float("nan")}), "fl.kd_temperature=nan"),
    (dict(attack={"boost": float("inf")}), "attack.boost=inf"),
    (dict(device="cuda"), r"device is an execution setting.*RunOptions\(device"),
    (dict(fl={"eval_batch_size": 8}), r"fl.eval_batch_size is an execution setting"),
    (dict(model={"name": "vgg"}), "model.name"),
    (dict(data={"bogus": 1}), r"unknown key\(s\) \['bogus'\] in data"),
    (dict(nonsense=1), r"unknown key\(s\) \['nonsense'\]"),
    (dict(fl={"clients_per_round": 99}), "clients_per_round"),
    (dict(attack={"target_class": 10}), "not a class"),
])
def test_invalid_values_raise_with_the_field_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        pr.load_config("quick", **kwargs)


def test_unknown_profile_and_defense_list_the_known_ones():
    with pytest.raises(ConfigError, match="smoke"):
        pr.load_config("huge")
    with pytest.raises(ConfigError, match="known defenses: .*none"):
        pr.load_config("quick", defense={"name": "magic"})
    with pytest.raises(ConfigError, match="attack.kind='evil' is unknown; choose one of .*classic"):
        pr.load_config("quick", attack={"kind": "evil"})
    with pytest.raises(ConfigError, match="accepted"):
        pr.load_config("quick", defense={"name": "krum", "params": {"num_maliciuos": 3}})


def test_overrides_merge_into_the_profile_and_hash_tracks_them():
    a = pr.load_config("quick", attack={"kind": "fm"}, seed=1)
    assert a.attack.kind == "fm" and a.attack.poison_ratio == 0.2 and a.fl.num_clients == 20 and a.seed == 1
    b = pr.load_config("quick", attack={"kind": "fm"}, seed=1)
    c = pr.load_config("quick", attack={"kind": "fm", "poison_ratio": 0.1}, seed=1)
    assert run_key(a) == run_key(b) != run_key(c)


def test_config_roundtrips_through_its_dict():
    a = pr.load_config("smoke", attack={"kind": "both", "fm_stages": ["kd"]}, defense="none")
    assert a.attack.fm_stages == ("kd",)
    assert config_from_dict(a.to_dict()) == a
