"""The three presets (smoke, quick, paper) and the one way to build a config from them: :func:`load_config`, which
also checks the attack and defense names and parameters against their registries.

Why the quick profile deviates from the paper's grid is written up in docs/paper.md ("The quick profile").
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields, replace
from typing import Any

from . import attacks, defenses
from .config import PROFILES, Config, ConfigError, _choice

_PROFILE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "data": {"dataset": "synthetic_blobs", "public_size": 200, "client_size": 400, "test_size": 200, "min_size": 4},
        "fm": {"source": "real_public", "n_per_class": 10, "num_inference_steps": 2, "batch_size": 50},
        "model": {"name": "tiny"},
        "fl": {
            "num_clients": 6,
            "clients_per_round": 5,
            "num_rounds": 2,
            "init_epochs": 1,
            "kd_epochs": 1,
            "batch_size": 16,
        },
    },
    # 2 CPU cores: Fashion-MNIST, 20 clients, 10 rounds, a 20:1 local:KD learning-rate ratio, and a classic attack
    # strong enough to show within 10 rounds (4 of 20 clients, update ×5, half their non-target data poisoned)
    "quick": {
        "data": {"dataset": "fashion_mnist", "public_size": 10_000, "client_size": 20_000, "test_size": 5_000},
        "fm": {"source": "ddpm", "n_per_class": 200},
        "model": {"name": "cnn", "channels_last": True},
        "attack": {"num_malicious": 4, "boost": 5.0, "client_poison_ratio": 0.5},
        "fl": {
            "num_clients": 20,
            "clients_per_round": 5,
            "num_rounds": 10,
            "local_epochs": 1,
            "lr": 0.05,
            "kd_lr": 2.5e-3,
            "batch_size": 32,
            "init_epochs": 10,
            "kd_epochs": 3,
        },
    },
    "paper": {
        "data": {
            "dataset": "cifar10",
            "public_size": 10_000,
            "client_size": 0,
            "partition": "dirichlet",
            "beta": 0.1,
            "min_size": 20,
        },
        "fm": {
            "source": "stable_diffusion",
            "checkpoint": "data/fm/stable-diffusion",
            "n_per_class": 1000,
            "num_inference_steps": 50,
            "guidance_scale": 7.5,
        },
        "model": {"name": "resnet18", "channels_last": True},
        "fl": {
            "num_clients": 100,
            "clients_per_round": 10,
            "num_rounds": 50,
            "local_epochs": 3,
            "init_epochs": 10,
            "kd_epochs": 3,
        },
    },
}

# execution settings that once lived in the config: saved configs may still hold them; new code passes RunOptions
MOVED_TO_OPTIONS = {
    "device": "device",
    "fl.engine": "engine",
    "fl.eval_batch_size": "eval_batch_size",
    "fl.share_training": "share_training",
    "fm.compile": "compile",
}


def _apply(obj: Any, overrides: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(obj)}
    unknown = set(overrides) - names
    for k in sorted(unknown):
        moved = MOVED_TO_OPTIONS.get(k if where == "config" else f"{where}.{k}")
        if moved:
            raise ConfigError(
                f"{k if where == 'config' else where + '.' + k} is an execution setting, not part of "
                f"the science config: pass paper_repro.RunOptions({moved}=...) to run_experiment"
            )
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; known keys: {sorted(names)}")
    kwargs = {}
    for k, v in overrides.items():
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            kwargs[k] = _apply(cur, v, f"{where}.{k}" if where != "config" else k)
        elif dataclasses.is_dataclass(cur) and isinstance(v, type(cur)):
            kwargs[k] = v
        elif dataclasses.is_dataclass(cur):
            name = k if where == "config" else f"{where}.{k}"
            raise ConfigError(
                f"{name}={v!r} must be a mapping of its fields, e.g. {name}={{...}}; known fields: "
                f"{sorted(f.name for f in fields(cur))}"
            )
        else:
            kwargs[k] = tuple(v) if isinstance(v, list) else v
    return replace(obj, **kwargs)


def build_checked(cfg: Config) -> tuple[attacks.Attack, defenses.Defense]:
    """The config's attack and defense, built once: raises :class:`ConfigError` unless both exist in their
    registries and accept the given parameters (the error lists the known names, or the accepted parameters) and
    the config suits them (``check_config``). Builds are cheap (no data): the range checks run now, not in round 1."""
    if cfg.attack.kind not in attacks.names():
        raise ConfigError(f"attack.kind={cfg.attack.kind!r} is unknown; choose one of {attacks.names()}")
    if cfg.defense.name not in defenses.names():
        raise ConfigError(f"defense.name={cfg.defense.name!r} is unknown; known defenses: {defenses.names()}")
    try:
        attacks.resolved_params(cfg.attack.kind, cfg.attack.params)
        attacks.REGISTRY[cfg.attack.kind].check_config(cfg)
        attack = attacks.build(cfg)
        if cfg.attack.schedule == "fixed" and not attack.malicious:
            raise ValueError(
                f"attack.schedule='fixed' with attack.kind={cfg.attack.kind!r}: this attack has no malicious clients "
                "to schedule; use schedule='sampled' (or a client attack)"
            )
        defense = defenses.get(cfg.defense.name, **cfg.defense.params)
        defense.check_config(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return attack, defense


def check_registered(cfg: Config) -> Config:
    """``cfg``, once :func:`build_checked` accepts it."""
    build_checked(cfg)
    return cfg


def load_config(profile: str = "quick", **overrides: Any) -> Config:
    """The ``profile`` preset with nested ``overrides`` applied, e.g. ``attack={"kind": "fm"}, seed=1``.

    Unknown profiles, keys, attacks or defenses raise :class:`ConfigError` listing what is known; every value is
    validated."""
    _choice("profile", profile, PROFILES)
    preset = {k: dict(v) if isinstance(v, dict) else v for k, v in _PROFILE_OVERRIDES[profile].items()}
    for section, vals in overrides.items():
        if isinstance(vals, dict) and isinstance(preset.get(section), dict):
            preset[section] = {**preset[section], **vals}
        else:
            preset[section] = vals
    if "defense" in preset and isinstance(preset["defense"], str):
        preset["defense"] = {"name": preset["defense"]}
    return check_registered(_apply(Config(profile=profile), preset, "config"))


def without_moved(d: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict without the execution settings that once lived in the config."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for path in MOVED_TO_OPTIONS:
        section, _, name = path.rpartition(".")
        (d.get(section, {}) if section else d).pop(name, None)
    return d


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` saved by :meth:`Config.to_dict` (e.g. a run's ``config.json``; execution settings
    saved by older versions are dropped)."""
    d = without_moved(d)
    profile = d.pop("profile", "quick")
    return check_registered(_apply(Config(profile=profile), d, "config"))
