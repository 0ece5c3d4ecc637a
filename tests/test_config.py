import pytest

import paper_repro as pr
from paper_repro.config import ConfigError, config_from_dict


@pytest.mark.parametrize("kwargs, match", [
    (dict(attack={"poison_ratio": 1.5}), r"attack.poison_ratio=1.5 is outside \[0, 1\]"),
    (dict(attack={"poison_ratio": -0.1}), "outside"),
    (dict(data={"beta": 0.0}), "beta"),
    (dict(attack={"kind": "classic", "num_malicious": 50}), "exceeds fl.num_clients"),
    (dict(attack={"trigger_size": 40}), "larger than the 28×28 image"),
    (dict(attack={"kind": "evil"}), "attack.kind='evil' is unknown"),
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
    with pytest.raises(ValueError, match="known defenses: .*none"):
        pr.load_config("quick", defense={"name": "magic"})


def test_overrides_merge_into_the_profile_and_hash_tracks_them():
    a = pr.load_config("quick", attack={"kind": "fm"}, seed=1)
    assert a.attack.kind == "fm" and a.attack.poison_ratio == 0.2 and a.fl.num_clients == 20 and a.seed == 1
    b = pr.load_config("quick", attack={"kind": "fm"}, seed=1)
    c = pr.load_config("quick", attack={"kind": "fm", "poison_ratio": 0.1}, seed=1)
    assert a.hash() == b.hash() != c.hash()
    assert pr.load_config("quick", device="cuda").hash() == pr.load_config("quick").hash()  # device not hashed


def test_config_roundtrips_through_its_dict():
    a = pr.load_config("smoke", attack={"kind": "both", "fm_stages": ["kd"]}, defense="none")
    assert a.attack.fm_stages == ("kd",)
    assert config_from_dict(a.to_dict()) == a
