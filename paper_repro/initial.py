"""The step-0 model cached on disk by a hash of everything that trains it, so that every run at a seed with the same
synthetic init set (all defenses, both partitions, classic vs no attack) trains it once."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .codehash import code_digest_of, library_versions
from .config import Config
from .fl import FLInputs, init_global_model
from .models import build_model
from .rng import derive_seed
from .store import save_atomic, stable_hash


def initial_model_key(cfg: Config, inp: FLInputs) -> str:
    """Key of the step-0 model: a hash of everything that trains it (architecture, seeds, synthetic init set,
    initialisation hyper-parameters)."""
    fl = cfg.fl
    src = {
        "model": cfg.model.name,
        "shape": list(inp.test.shape),
        "classes": inp.test.num_classes,
        "init_seed": derive_seed(cfg.seed, "model_init"),
        "order_seed": cfg.seed,
        "synthetic": inp.synthetic_init.digest(),
        "epochs": fl.init_epochs,
        "lr": fl.init_lr,
        "momentum": fl.momentum,
        "batch_size": fl.batch_size,
        "channels_last": cfg.model.channels_last,
        "code": code_digest_of(init_global_model),
        "libraries": library_versions(("torch",)),
    }
    if fl.precision != "fp32":  # fp32 models keep the key they had before the option existed
        src["precision"] = fl.precision
    return f"{cfg.model.name}_{stable_hash(src, 16)}"


def cached_initial_model(
    cfg: Config, inp: FLInputs, cache: Path | None, device: str = "cpu", refresh: bool = False
) -> tuple[nn.Module, bool]:
    """Step 0 through a disk cache: the model trained on the synthetic init set, and whether it was loaded
    (``refresh``: train again and replace the cached model)."""
    if cache is None:
        return init_global_model(cfg, inp, device), False
    key = initial_model_key(cfg, inp)
    path = Path(cache) / f"{key}.pt"
    if path.exists() and not refresh:
        model = build_model(
            cfg.model.name, inp.test.shape, inp.test.num_classes, derive_seed(cfg.seed, "model_init")
        ).to(device)
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(saved, dict) or "key" not in saved:
                raise ValueError("it was written by an older version of this package")
            if saved["key"] != key:
                raise ValueError(f"it holds the model of key {saved['key']!r} (a file copied over it?)")
            model.load_state_dict(saved["state"])
            return model, True
        except Exception as e:  # truncated or foreign file: say so, then train again
            warnings.warn(
                f"cached initial model {path} is unreadable ({type(e).__name__}: {e}); training it again", stacklevel=2
            )
    model = init_global_model(cfg, inp, device)
    save_atomic(lambda tmp: torch.save({"key": key, "state": model.state_dict()}, tmp), path)
    return model, False
