"""paper_repro: reproducibility package for "Securing Federated Learning against Backdoor Threats with Foundation
Model Integration" (Bi & Li, arXiv 2410.17573) — a reconstruction, see docs/paper.md.

    import paper_repro as pr
    cfg = pr.load_config("quick", attack={"kind": "fm"}, defense={"name": "act_bound"}, seed=0)
    res = pr.run_experiment(cfg)            # res.history, res.final, res.run_dir

Names load on first use, so ``import paper_repro.tables`` or ``paper_repro.plots`` does not import torch.
"""

from __future__ import annotations

import importlib

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

# public name → module that defines it
_NAMES = {
    "Config": "config",
    "ConfigError": "config",
    "load_config": "profiles",
    "config_from_dict": "profiles",
    "RunOptions": "options",
    "DataNotFoundError": "data",
    "ImageSet": "data",
    "prepare": "inputs",
    "Prepared": "inputs",
    "RunResult": "results",
    "load_results": "results",
    "run_experiment": "runner",
    "run_many": "runner",
}
_MODULES = (
    "aggregators",
    "attacks",
    "defenses",
    "fl",
    "initial",
    "runner",
    "inputs",
    "results",
    "training",
    "models",
    "data",
    "config",
    "profiles",
    "options",
    "rng",
    "store",
    "metrics",
    "local_training",
    "partition",
    "triggers",
    "fm",
    "studies",
    "tables",
    "plots",
    "notebooks",
    "teaching",
)

__all__ = sorted([*_NAMES, "aggregators", "attacks", "defenses"])


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'paper_repro' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_MODULES})
