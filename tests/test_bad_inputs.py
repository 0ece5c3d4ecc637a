"""Every bad input we could think of, generated field by field, must be rejected clearly before any work.

"Clearly" means: the config/options/defense constructor raises ``ValueError`` (``ConfigError``, ``OptionsError``)
whose message names the offending field, and nothing from torch or numpy is reached; on the command line the
process exits non-zero with a short message (no traceback) before any experiment, table or notebook starts.

Valid values in unusual but common forms (numpy scalars) must be accepted and stored as Python values.
``python tests/test_bad_inputs.py`` prints the tally per surface (tried / rejected clearly / accepted correctly /
silently accepted / crashing), the table ``docs/architecture.md`` quotes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from collections import Counter

import pytest

import paper_repro as pr
from paper_repro import defenses
from paper_repro.config import Config
from paper_repro.options import RunOptions
from paper_repro.store import REPO_ROOT

NAN, INF = float("nan"), float("inf")
UNDER_A_FILE = str(REPO_ROOT / "README.md" / "sub")  # a folder that cannot be created (even by root)
ALWAYS_BAD = {  # by declared type: values of the wrong kind, and numbers no field of that kind accepts
    "int": ["3", 2.5, True, None, [1], -1, NAN],
    "float": ["0.1", True, None, [0.1], NAN, INF, -INF, -1.0, 1e39, -1e39],
    "str": [3, None, "", ["a"]],
    "bool": ["yes", 1, 0, None],
    "tuple[str, ...]": [[], "init", ["bogus"], None, [1]],
    "dict": ["x", None, [1]],
}
CHOICE_FIELDS = {
    "data.dataset",
    "data.partition",
    "fm.source",
    "fm.precision",
    "model.name",
    "attack.kind",
    "attack.trigger",
    "fl.weighting",
    "fl.precision",
    "defense.name",
    "profile",
}


def _section_cases():
    for section in ("data", "fm", "model", "attack", "fl", "defense"):
        yield f"{section}", "not a mapping", {section: "abc"}
        yield f"{section}", 3, {section: 3}
        yield f"{section}", None, {section: None}
        sub = type(getattr(Config(), section))
        for f in dataclasses.fields(sub):
            bad = list(ALWAYS_BAD.get(f.type, []))
            if f"{section}.{f.name}" in CHOICE_FIELDS:
                bad.append("bogus")
            for v in bad:
                yield f"{section}.{f.name}", v, {section: {f.name: v}}
    for v in ALWAYS_BAD["int"]:
        yield "seed", v, {"seed": v}


def _cross_field_cases():
    yield "attack.target_class", 10, {"attack": {"target_class": 10}}
    yield "attack.trigger_size", 29, {"attack": {"trigger_size": 29}}
    yield "attack.num_malicious", 21, {"attack": {"kind": "classic", "num_malicious": 21}}
    yield "fl.clients_per_round", 21, {"fl": {"clients_per_round": 21}}
    yield "fl.clients_per_round", 0, {"fl": {"clients_per_round": 0}}
    yield "data.public_size", 0, {"data": {"public_size": 0}}
    yield "fm.eta", 1.5, {"fm": {"eta": 1.5}}
    yield "fl.momentum", 1.0, {"fl": {"momentum": 1.0}}
    yield "fl.kd_alpha", 1.5, {"fl": {"kd_alpha": 1.5}}
    yield "attack.poison_ratio", 1.5, {"attack": {"poison_ratio": 1.5}}
    yield "fm.prompt_template", "no slot", {"fm": {"prompt_template": "no slot"}}
    for name, params in (
        ("krum", {"num_malicious": 2}),
        ("multi_krum", {"num_malicious": 2}),
        ("multi_krum", {"num_selected": 9}),
        ("act_bound", {"sites": "conv9"}),
        ("act_bound", {"sites": ["conv9"]}),
        ("pruning", {"site": "conv9"}),
    ):
        ((key, value),) = params.items()
        yield (
            f"defense.params.{key}",
            f"{name} {value} vs the model/round",
            {"defense": {"name": name, "params": params}},
        )
    for params in ({"mask_ratio": 1.5}, {"mask_ratio": "x"}, {"mask_ratio": NAN}, {"ratio": 0.1}):
        ((key, value),) = params.items()
        yield (
            f"attack.params.{key if key == 'mask_ratio' else 'accepted'}",
            f"neurotoxin {value}",
            {"attack": {"kind": "neurotoxin", "params": params}},
        )
    yield "attack.params.accepted", "classic {'x': 1}", {"attack": {"kind": "classic", "params": {"x": 1}}}
    yield "attack.trigger", "dba without the dba trigger", {"attack": {"kind": "dba"}}
    yield "device", "moved", {"device": "cuda"}
    yield "nonsense", "unknown key", {"nonsense": 1}
    yield "data.bogus", "unknown key", {"data": {"bogus": 1}}


def _meaningless_cases():
    """Runs that could not measure what they claim: an attack that poisons nothing or reaches no model, a trigger
    that changes no pixel, a defense whose setting makes it FedAvg or leaves it undefined."""
    dba = {"trigger": "dba"}
    for kind in ("classic", "both", "model_replacement", "dba", "neurotoxin", "adaptive_decoys"):
        extra = dba if kind == "dba" else {}
        yield (
            "attack.num_malicious",
            f"{kind} with no malicious client",
            {"attack": {"kind": kind, "num_malicious": 0, **extra}},
        )
        yield (
            "attack.client_poison_ratio",
            f"{kind} poisoning no sample",
            {"attack": {"kind": kind, "client_poison_ratio": 0.0, **extra}},
        )
    for kind in ("fm", "both", "fm_generated", "fm_bound_aware"):
        yield "attack.poison_ratio", f"{kind} poisoning no image", {"attack": {"kind": kind, "poison_ratio": 0.0}}
        yield (
            "attack.fm_stages",
            f"{kind} on kd without fusion",
            {
                "attack": {"kind": kind, "fm_stages": ["kd"]},
                "fl": {"fusion": False},
            },
        )
    yield (
        "attack.fm_stages",
        "fm on kd with 0 KD epochs",
        {"attack": {"kind": "fm", "fm_stages": ["kd"]}, "fl": {"kd_epochs": 0}},
    )
    yield (
        "attack.fm_stages",
        "fm on init with 0 init epochs",
        {"attack": {"kind": "fm", "fm_stages": ["init"]}, "fl": {"init_epochs": 0}},
    )
    yield (
        "attack.fm_stages",
        "fm with neither stage run",
        {"attack": {"kind": "fm"}, "fl": {"init_epochs": 0, "fusion": False}},
    )
    for kind in ("none", "fm", "classic"):
        for trigger in ("sig", "blend"):
            yield (
                "attack.blend_alpha",
                f"{kind} {trigger} of strength 0",
                {"attack": {"kind": kind, "trigger": trigger, "blend_alpha": 0.0}},
            )
    yield (
        "attack.params.steps",
        "fm_bound_aware with no optimisation",
        {"attack": {"kind": "fm_bound_aware", "params": {"steps": 0}}},
    )
    for name in ("median", "flame", "geminiguard", "weidetect"):
        yield (
            "fl.clients_per_round",
            f"{name} with 2 updates per round",
            {"defense": name, "fl": {"clients_per_round": 2}},
        )
    for name, key, value in (
        ("trimmed_mean", "beta", 0.1),  # ⌊0.1 · 5⌋ = 0 trimmed
        ("trimmed_mean", "beta", 0.0),
        ("multi_krum", "num_selected", 5),  # every update averaged
        ("pruning", "fraction", 0.0),
        ("dp", "sigma", 0.0),
        ("mars", "kappa", 0.0),
        ("weidetect", "alpha", 0.0),
        ("weidetect", "alpha", 1.0),
        ("geminiguard", "per_class", 0),
    ):
        yield (
            f"defense.params.{key}",
            f"{name} {key}={value} switches it off",
            {"defense": {"name": name, "params": {key: value}}},
        )


MODEL_NAMES = ("site", "sites")
"""Defense parameters naming modules of the model: checked against the model when the config is built."""


def _defense_param_values(default):
    if isinstance(default, bool):
        return ["yes", None, 2]
    if isinstance(default, int):
        return ["3", 2.5, True, None, [1], -1]
    if isinstance(default, float):
        return ["0.1", True, None, [0.1], NAN, INF, -1.0, 1e39]
    if isinstance(default, str):
        return [3, None, "", "bogus"]
    return ["x", True, NAN, -1, 0, [1], 1e39]  # an optional number (None = automatic)


def _defense_cases():
    for name in defenses.names():
        for key, default in defenses.resolved_params(name).items():
            for v in _defense_param_values(default):
                yield name, key, v
        yield name, "bogus_param", 1


def _options_cases():
    for key, values in {
        "device": ["bogus", "", 3, None, "cuda:x"],
        "engine": ["bogus", 3, None],
        "eval_batch_size": [0, -1, "8", 2.5, True, None],
        "share_training": ["yes", 1, None],
        "compile": ["yes", 1, None],
        "threads": [-1, "2", 2.5, True, None],
        "jobs": [0, -1, "2", 2.5, True, None],
    }.items():
        for v in values:
            yield key, v


def _classify(call, field: str):
    """'clear' (a ValueError naming the field), 'accepted', or the kind of other failure."""
    try:
        call()
    except ValueError as e:
        msg = str(e)
        named = field.split(".")[-1].lower() in msg.lower()
        return "clear" if named else f"unnamed: {msg[:80]}"
    except Exception as e:  # noqa: BLE001 - the point is to see which kind leaks
        return f"other {type(e).__name__}: {str(e)[:80]}"
    return "accepted"


CONFIG_CASES = list(_section_cases()) + list(_cross_field_cases()) + list(_meaningless_cases())
DEFENSE_CASES = list(_defense_cases())
OPTIONS_CASES = list(_options_cases())


def _ids(cases):
    return [f"{c[0]}={c[1]!r}"[:60] for c in cases]


@pytest.mark.parametrize("field, value, overrides", CONFIG_CASES, ids=_ids(CONFIG_CASES))
def test_config_rejects_clearly(field, value, overrides):
    assert _classify(lambda: pr.load_config("quick", **overrides), field) == "clear"


@pytest.mark.parametrize("name, key, value", DEFENSE_CASES, ids=_ids([(f"{n}.{k}", v) for n, k, v in DEFENSE_CASES]))
def test_defense_parameters_rejected_by_get_and_by_the_config(name, key, value):
    if not (key in MODEL_NAMES and value == "bogus"):  # a module name can only be checked against a model
        assert _classify(lambda: defenses.get(name, **{key: value}), key) == "clear"
    assert _classify(lambda: pr.load_config("quick", defense={"name": name, "params": {key: value}}), key) == "clear"


@pytest.mark.parametrize("key, value", OPTIONS_CASES, ids=_ids(OPTIONS_CASES))
def test_run_options_rejected(key, value):
    assert _classify(lambda: RunOptions(**{key: value}), key) == "clear"


def test_a_device_this_machine_lacks_is_rejected_before_any_work(tmp_path):
    import torch

    from paper_repro.options import OptionsError

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(OptionsError, match=r"device='cuda:7'.*RunOptions\(device='cpu'\)"):
        pr.run_experiment(pr.load_config("smoke"), tmp_path, options=RunOptions(device="cuda:7"))
    assert not any(tmp_path.iterdir())


# the command line: argv, and a word the one-line message must contain
CLI_CASES = [
    (["run", "--profile", "huge"], "--profile"),
    (["run", "--seed", "-1"], "--seed"),
    (["run", "--seed", "x"], "--seed"),
    (["run", "--attack", "evil"], "--attack"),
    (["run", "--defense", "magic"], "--defense"),
    (["run", "--partition", "foo"], "--partition"),
    (["run", "--fl.lr", "abc"], "fl.lr"),
    (["run", "--fl.lr"], "fl.lr"),
    (["run", "--nosuch.x", "1"], "nosuch"),
    (["run", "--fl.num_rounds", "2.5"], "fl.num_rounds"),
    (["run", "--fl.lr", "1e999"], "fl.lr"),
    (["run", "--attack.fm_stages"], "fm_stages"),
    (["run", "--fl", "3"], "fl"),
    (["run", "--device", "cuda"], "device"),
    (["run", "--defense", "norm_clip", "--defense.params.max_norm", "-1"], "max_norm"),
    (["run", "--defense", "krum", "--defense.params.num_malicious", "3"], "num_malicious"),
    (["run", "--defense", "krum", "--defense.params.num_malicious", "two"], "num_malicious"),
    (["run", "--attack", "fm", "--attack.params.steps", "3"], "steps"),
    (["run", "--fl.fusion", "maybe"], "fl.fusion"),
    (["run", "--fl.lr", "0.1", "--fl.l", "0.2"], "--fl.l"),
    (["grid", "--jobs", "0"], "--jobs"),
    (["grid", "--seeds", "-1"], "--seeds"),
    (["grid", "--seeds", "0", "0"], "--seeds"),
    (["grid", "--defenses", "magic"], "magic"),
    (["results", "--jobs", "0"], "--jobs"),
    (["results", "--jobs", "-2"], "--jobs"),
    (["results", "--defenses", "magic", "none"], "magic"),
    (["results", "--seeds", "a"], "--seeds"),
    (["results", "--tables-dir", UNDER_A_FILE], "tables-dir"),
    (["grid", "--out", "/tmp"], "is a folder"),
    (["components", "--out", "/tmp"], "is a folder"),
    (["grid", "--out", UNDER_A_FILE + "/g.csv"], "--out"),
    (["main", "--seeds", "-2"], "--seeds"),
    (["tables", "--profile", "x"], "--profile"),
    (["figures", "--tables-dir", "/nonexistent/tables"], "tables-dir"),
    (["notebooks", "--profile", "huge"], "--profile"),
    (["heldout", "--settings", "bogus"], "bogus"),
    (["heldout", "--seeds", "10", "10"], "--seeds"),
    (["heldout", "--defenses", "magic"], "magic"),
    (["heldout", "--defenses", "spectral eps0.9"], "spectral eps0.9"),
    (["heldout", "--table", "../grid"], "--table"),
    (["heldout", "--table", "results"], "--table"),
    (["heldout", "--jobs", "0"], "--jobs"),
    (["heldout", "--attacks", "evil"], "evil"),
    (["attacks", "--study", "calibration", "--attacks", "FM patch", "evil"], "evil"),
    (["attacks", "--study", "calibration", "--budget", "0"], "--budget"),
    (["attacks", "--study", "breadth", "--defenses", "dp sigma0.01"], "dp sigma0.01"),  # variants: calibrated only
    (["attacks", "--study", "calibrated", "--defenses", "dp sigma9"], "dp sigma9"),
    (["attacks", "--study", "calibration", "--budget", "nan"], "--budget"),
    (["recompute", "--budget", "-5"], "--budget"),
    (["bogus"], "bogus"),
    ([], "cmd"),
]
FM_CLI_CASES = [
    (["train", "--steps", "-5", "--out", "x"], "--steps"),
    (["train", "--steps", "0", "--out", "x"], "--steps"),
    (["train", "--profile", "huge", "--out", "x"], "--profile"),
    (["train", "--seed", "-1", "--out", "x"], "--seed"),
    (["train"], "--out"),
    (["train", "--out", UNDER_A_FILE], "--out"),
]


class ReachedWork(Exception):
    """A command got past its argument checks into real work."""


def _block_work(monkeypatch):
    import paper_repro.fm.ddpm as ddpm
    import paper_repro.notebooks as nb
    import paper_repro.runner as runner
    import paper_repro.studies.compute as compute
    import paper_repro.studies.grid as grid
    import paper_repro.studies.heldout as heldout
    import paper_repro.studies.main_job as main_job

    def stop(*a, **k):
        raise ReachedWork

    for mod, attr in (
        (runner, "run_experiment"),
        (grid, "run_grid"),
        (compute, "compute_tables"),
        (compute, "export_tables"),
        (main_job, "main_job"),
        (nb, "run_notebooks"),
        (heldout, "heldout_study"),
    ):
        monkeypatch.setattr(mod, attr, stop)
    monkeypatch.setattr(ddpm.ClassConditionalDDPM, "train", classmethod(lambda cls, *a, **k: stop()))


def _cli_outcome(main, argv, word):
    err_stream = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err_stream):
            _block_work(mp)
            main(argv)
    except ReachedWork:
        return "accepted"
    except SystemExit as e:
        err = err_stream.getvalue() + (e.code if isinstance(e.code, str) else "")
        if e.code in (0, None):
            return "accepted"
        if "Traceback" in err:
            return "traceback"
        return "clear" if word.lstrip("-") in err else f"unnamed: {err.strip()[-100:]}"
    except Exception as e:  # noqa: BLE001
        return f"other {type(e).__name__}: {str(e)[:80]}"
    return "accepted"


@pytest.mark.parametrize("argv, word", CLI_CASES, ids=[" ".join(a) or "<none>" for a, _ in CLI_CASES])
def test_cli_rejects_before_any_work_in_one_line(argv, word):
    from paper_repro.__main__ import main

    assert _cli_outcome(main, argv, word) == "clear"


@pytest.mark.parametrize("argv, word", FM_CLI_CASES, ids=[" ".join(a) for a, _ in FM_CLI_CASES])
def test_fm_cli_rejects_before_training(argv, word):
    from paper_repro.fm.__main__ import main

    assert _cli_outcome(main, argv, word) == "clear"


def _numpy_cases():
    """Valid values in the form a numpy user passes them: each numeric or bool field (config and defense
    parameters) given its default as a numpy scalar. Each must be accepted and stored as the Python value."""
    import numpy as np

    def as_numpy(v):
        if isinstance(v, bool):
            return np.bool_(v)
        return np.int64(v) if isinstance(v, int) else np.float64(v) if isinstance(v, float) else None

    cfg = Config()
    for section in ("data", "fm", "model", "attack", "fl"):
        for f in dataclasses.fields(getattr(cfg, section)):
            default = getattr(getattr(cfg, section), f.name)
            if (v := as_numpy(default)) is not None:
                yield f"{section}.{f.name}", {section: {f.name: v}}, default
    yield "seed", {"seed": np.int64(3)}, 3
    for name in defenses.names():
        for key, default in defenses.resolved_params(name).items():
            if (v := as_numpy(default)) is not None:
                yield f"defense.params.{key}", {"defense": {"name": name, "params": {key: v}}}, default


NUMPY_CASES = list(_numpy_cases())


def _stored(cfg, field: str):
    *path, leaf = field.split(".")
    obj = cfg
    for p in path:
        obj = obj[p] if isinstance(obj, dict) else getattr(obj, p)
    return obj[leaf] if isinstance(obj, dict) else getattr(obj, leaf)


def _numpy_outcome(field: str, overrides: dict, default) -> str:
    """'correct' (accepted, stored as the Python value of the default's type), 'refused', or what went wrong."""
    try:
        v = _stored(pr.load_config("quick", **overrides), field)
    except ValueError as e:
        return f"refused: {str(e)[:80]}"
    except Exception as e:  # noqa: BLE001
        return f"other {type(e).__name__}: {str(e)[:80]}"
    return "correct" if type(v) is type(default) and v == default else f"stored as {type(v).__name__} {v!r}"


@pytest.mark.parametrize("field, overrides, default", NUMPY_CASES, ids=[c[0] for c in NUMPY_CASES])
def test_numpy_scalars_are_taken_as_the_python_values_they_hold(field, overrides, default):
    assert _numpy_outcome(field, overrides, default) == "correct"


def tally() -> dict[str, Counter]:
    """Outcome counts per surface: 'clear', 'accepted', or the kind of other failure."""
    from paper_repro.__main__ import main as cli
    from paper_repro.fm.__main__ import main as fm_cli

    def count(outcomes):
        return Counter(o.split(":")[0] for o in outcomes)

    return {
        "config (load_config)": count(_classify(lambda: pr.load_config("quick", **o), f) for f, _, o in CONFIG_CASES),
        "defense params (defenses.get; module names excluded)": count(
            _classify(lambda: defenses.get(n, **{k: v}), k)
            for n, k, v in DEFENSE_CASES
            if not (k in MODEL_NAMES and v == "bogus")
        ),
        "defense params (load_config)": count(
            _classify(lambda: pr.load_config("quick", defense={"name": n, "params": {k: v}}), k)
            for n, k, v in DEFENSE_CASES
        ),
        "run options (RunOptions)": count(_classify(lambda: RunOptions(**{k: v}), k) for k, v in OPTIONS_CASES),
        "command line (python -m paper_repro)": count(_cli_outcome(cli, a, w) for a, w in CLI_CASES),
        "command line (python -m paper_repro.fm)": count(_cli_outcome(fm_cli, a, w) for a, w in FM_CLI_CASES),
    }


if __name__ == "__main__":
    total = Counter()
    print(
        "| surface | tried | rejected clearly | accepted correctly | silently accepted | crashing |\n"
        "|---|---|---|---|---|---|"
    )
    for surface, c in tally().items():
        n = sum(c.values())
        total.update(c)
        print(f"| {surface} (bad) | {n} | {c['clear']} | – | {c['accepted']} | {n - c['clear'] - c['accepted']} |")
    good = Counter(_numpy_outcome(*case).split(":")[0] for case in NUMPY_CASES)
    n = sum(good.values())
    print(
        f"| numpy scalars of valid values (good) | {n} | {good['refused']} | {good['correct']} | – | "
        f"{n - good['correct'] - good['refused']} |"
    )
    sys.exit(0 if total["clear"] == sum(total.values()) and good["correct"] == n else 1)


def test_the_calibrated_study_takes_a_defense_variant_label_as_the_held_out_tables_do():
    import argparse

    from paper_repro.__main__ import _validate

    class Refused(Exception):
        pass

    parser = argparse.ArgumentParser()
    parser.error = lambda msg: (_ for _ in ()).throw(Refused(msg))
    ns = dict(cmd="attacks", attacks=["FM patch"], seeds=None, settings=None, table=None, tables_dir=None)
    _validate(parser, argparse.Namespace(**ns, study="calibrated", defenses=["none", "dp sigma0.01"]))
    with pytest.raises(Refused, match="dp sigma0.01"):
        _validate(parser, argparse.Namespace(**ns, study="breadth", defenses=["none", "dp sigma0.01"]))
