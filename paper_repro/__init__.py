"""paper_repro: reproducibility package for "Securing Federated Learning against Backdoor Threats with Foundation
Model Integration" (Bi & Li, arXiv 2410.17573) — a reconstruction, see PAPER.md.

    import paper_repro as pr
    cfg = pr.load_config("quick", attack={"kind": "fm"}, seed=0)
    res = pr.run_experiment(cfg)
"""
from . import aggregators, attacks, defenses
from .config import Config, ConfigError, load_config
from .data import DataNotFoundError, ImageSet
from .experiment import RunResult, load_results, prepare, run_experiment

__all__ = ["aggregators", "attacks", "defenses", "Config", "ConfigError", "load_config", "DataNotFoundError",
           "ImageSet", "RunResult", "load_results", "prepare", "run_experiment"]
