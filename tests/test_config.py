import json

import pytest

import paper_repro as pr
from paper_repro.config import ConfigError
from paper_repro.profiles import config_from_dict
from paper_repro.results import run_key


@pytest.mark.parametrize(
    "kwargs, match",
    [
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
    ],
)
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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attack={"target_class": 1.5}), "attack.target_class=1.5 must be an integer"),
        (dict(seed=True), "seed=True must be an integer"),
        (dict(attack={"fm_stages": []}), "fm_stages"),
        (dict(fl={"num_rounds": "3"}), "fl.num_rounds='3' must be an integer"),
        (dict(fl={"num_rounds": 2.0}), "must be an integer"),
        (dict(data={"beta": float("inf")}), "data.beta=inf must be a finite number"),
        (dict(fm={"guidance_scale": float("nan")}), "fm.guidance_scale=nan"),
        (dict(model={"channels_last": "yes"}), "model.channels_last='yes' must be a bool"),
        (
            dict(defense={"name": "norm_clip", "params": {"max_norm": -1.0}}),
            r"max_norm=-1.0: input should be greater than 0 \(default None\)",
        ),
        (dict(defense={"name": "dp", "params": {"sigma": -1e-3}}), "sigma"),
        (dict(defense={"name": "act_bound", "params": {"init_quantile": float("nan")}}), "init_quantile=nan"),
        (dict(defense={"name": "act_bound", "params": {"epochs": -1}}), "epochs=-1"),
        (dict(defense={"name": "act_bound", "params": {"sites": "hiden"}}), "sites='hiden'"),
        (
            dict(defense={"name": "trimmed_mean", "params": {"beta": "0.1"}}),
            "beta='0.1': input should be a valid number",
        ),
        (dict(defense={"name": "krum", "params": {"num_malicious": 2}}), "needs more than 6 clients per round"),
        (dict(defense={"name": "pruning", "params": {"fraction": 1.5}}), "fraction=1.5"),
    ],
)
def test_bad_types_ranges_and_defense_parameters_raise_before_any_work(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        pr.load_config("quick", **kwargs)


def test_execution_settings_are_options_and_are_validated():
    with pytest.raises(pr.options.OptionsError, match="eval_batch_size=0"):
        pr.RunOptions(eval_batch_size=0)
    with pytest.raises(pr.options.OptionsError, match="unknown run option"):
        pr.RunOptions.for_profile("quick", enigne="loop")
    assert pr.RunOptions.for_profile("paper").device == "cuda"
    assert pr.RunOptions.for_profile("quick", jobs=2).eval_batch_size == 32


def test_numpy_scalars_are_taken_as_the_python_values_they_hold():
    np = pytest.importorskip("numpy")
    cfg = pr.load_config(
        "smoke",
        seed=np.int64(1),
        fl={"lr": np.float32(0.05), "num_rounds": np.int64(2), "fusion": np.bool_(True)},
        defense={"name": "krum", "params": {"num_malicious": np.int64(1)}},
    )
    assert type(cfg.seed) is int and type(cfg.fl.lr) is float and type(cfg.fl.fusion) is bool
    assert type(cfg.defense.params["num_malicious"]) is int
    json.dumps(cfg.to_dict())  # plain values all the way down
    opts = pr.RunOptions(jobs=np.int64(2), share_training=np.bool_(False))
    assert type(opts.jobs) is int and opts.share_training is False
    with pytest.raises(pr.ConfigError, match="seed=True must be an integer"):
        pr.load_config("smoke", seed=np.bool_(True))  # a bool stays a bool, and is no count
