"""Unit tier: the package's layering (every import points down, no import circle), the FL loop's shape, and the
registries that make a new defense or attack one file plus one line."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import paper_repro as pr
from paper_repro.params import Field, params, variant

PKG = Path(pr.__file__).resolve().parent
# bottom to top; a module may import modules of its own layer or below, never above
LAYERS = [
    [
        "store",
        "checks",
        "rng",
        "options",
        "config",
        "params",
        "codehash",
        "registry",
        "progress",
        "cliargs",
        "figstamp",
        "execution",
    ],
    [
        "data",
        "partition",
        "models",
        "precision",
        "aggregators",
        "triggers",
        "tables",
        "plots",
        "study_plots",
        "stats",
        "backgrounds",
        "splits",
    ],
    [
        "training",
        "local_training",
        "metrics",
        "activation_bounds",
        "fm.ddpm",
        "fm.text2image",
        "fm.quality",
        "fm.draw",
        "fm.synthetic",
        "fm",
        "attacks.*",
        "attacks",
        "defenses.*",
        "defenses",
    ],
    ["profiles", "fl", "catalog"],
    ["initial", "inputs", "results", "ledger"],
    ["runner", "integrations", "integrations.*"],
    ["studies", "studies.*"],
    ["notebooks", "teaching", "prose", "marks", "__main__", "fm.__main__", "__init__"],
]
TORCH_FREE = [
    "store",
    "rng",
    "options",
    "config",
    "codehash",
    "cliargs",
    "data",
    "tables",
    "plots",
    "study_plots",
    "notebooks",
    "teaching",
    "prose",
    "marks",
    "figstamp",
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(mod: str) -> int:
    for i, names in enumerate(LAYERS):
        for n in names:
            if mod == n or (n.endswith(".*") and mod.startswith(n[:-1])):
                return i
    raise AssertionError(f"module paper_repro.{mod} is in no layer of tests/test_architecture.py: place it")


def _imports(path: Path) -> set[str]:
    """Package-internal modules imported anywhere in ``path`` (also inside functions), as dotted names."""
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            pkg = base[: len(base) - node.level + 1] if node.level > 1 else base
            target = ".".join([*pkg, *(node.module.split(".") if node.module else [])])
            for alias in node.names:  # `from . import defenses` imports a module
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(
                    sub
                    if (PKG / sub.replace(".", "/")).with_suffix(".py").exists()
                    or (PKG / sub.replace(".", "/")).is_dir()
                    else target
                )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paper_repro."):
            out.add(node.module.removeprefix("paper_repro."))
    out.discard("")
    out.discard(mod)
    return out


GRAPH = {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


@pytest.mark.unit
def test_every_import_points_down_or_sideways():
    wrong = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, ts in GRAPH.items()
        if m != "__init__"
        for t in ts
        if _layer(t) > _layer(m)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.unit
def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in GRAPH.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(t) :], t]))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in GRAPH:
        if m not in state:
            visit(m, [m])


@pytest.mark.unit
def test_the_architecture_docs_list_the_layers_the_imports_obey():
    import re

    doc = (PKG.parent / "docs" / "architecture.md").read_text()
    rows = {int(m[1]): re.findall(r"`([\w.*]+)`", m[2]) for m in re.finditer(r"^\| (\d+) \| ([^|]+) \|", doc, re.M)}
    assert rows == {i + 1: names for i, names in enumerate(LAYERS)}, "docs/architecture.md's layer table is out of date"


@pytest.mark.unit
def test_no_module_is_long():
    # counted as `ruff format` writes them (a long call takes one line per argument)
    long = {m: n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420 for m in [_module_name(p)]}
    assert not long, long


@pytest.mark.unit
def test_the_code_is_formatted_and_lint_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is a dev dependency: pip install -e '.[dev]'")
    dirs = [str(PKG.parent / d) for d in ("paper_repro", "tests", "benchmarks")]
    fmt = subprocess.run([str(ruff), "format", "--check", *dirs], capture_output=True, text=True)
    assert fmt.returncode == 0, f"run `ruff format paper_repro tests benchmarks`:\n{fmt.stdout[-2000:]}"
    lint = subprocess.run([str(ruff), "check", *dirs], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-2000:]


@pytest.mark.unit
def test_table_and_plot_modules_import_without_torch():
    code = "import sys; import " + ", ".join(f"paper_repro.{m}" for m in TORCH_FREE) + "; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.unit
def test_run_federated_reads_as_the_numbered_steps():
    from paper_repro.fl import run_federated

    src = inspect.getsource(run_federated)
    assert len(src.splitlines()) <= 100
    steps = [src.index(f"# {k}.") for k in range(7) if f"# {k}." in src]
    assert len(steps) >= 6 and steps == sorted(steps), "steps 0-6 as numbered comments, in order"


# ------------------------------------------------------------------------------------------------ registries
class _ScaleDown(pr.defenses.Defense):
    """A toy step-3 defense: FedAvg of the updates, halved."""

    name = "scale_down"

    @params
    class Params:
        factor: float = Field(0.5, ge=0, description="the FedAvg update times this")

    def aggregate(self, updates, weights, ctx):
        return pr.defenses.AggregateResult(self.factor * super().aggregate(updates, weights, ctx).update)


class _FlipLabels(pr.attacks.Attack):
    """A toy FM attack: the whole synthetic set relabelled to the target class."""

    name = "flip_all"

    @params
    class Params:
        share: float = Field(1.0, gt=0, le=1, description="share of the synthetic set relabelled")

    @classmethod
    def from_config(cls, cfg):
        a = cls()
        a.set_params(cls.params_of(cfg))
        a.target = cfg.attack.target_class
        return a

    def poison_synthetic(self, clean):
        idx = np.arange(int(round(self.share * len(clean))))
        flipped = clean.with_arrays(y=np.where(np.isin(np.arange(len(clean)), idx), self.target, clean.y))
        return flipped, flipped, idx


@pytest.mark.smoke
def test_a_new_defense_is_one_class_and_one_register_call(tmp_path, monkeypatch):
    monkeypatch.setitem(pr.defenses.REGISTRY, "scale_down", _ScaleDown)  # == pr.defenses.register(...), undone
    assert "scale_down" in pr.defenses.names()
    cfg = pr.load_config("smoke", defense={"name": "scale_down", "params": {"factor": 0.0}})
    res = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    assert res.run_dir.name.startswith("smoke_none_scale_down_")
    with pytest.raises(pr.ConfigError, match="accepted"):
        pr.load_config("smoke", defense={"name": "scale_down", "params": {"factr": 0.0}})
    with pytest.raises(pr.ConfigError, match=r"factor=-1.0: input should be greater than or equal to 0"):
        pr.load_config("smoke", defense={"name": "scale_down", "params": {"factor": -1.0}})
    assert pr.defenses.REGISTRY.params("scale_down")[0]["limits"] == "≥ 0"  # listed for --help and the docs
    with pytest.raises(TypeError, match="subclass"):
        pr.defenses.register("bad", object)


@pytest.mark.smoke
def test_a_new_attack_is_one_class_and_one_register_call(tmp_path, monkeypatch):
    monkeypatch.setitem(pr.attacks.REGISTRY, "flip_all", _FlipLabels)
    assert "flip_all" in pr.attacks.names()
    cfg = pr.load_config("smoke", attack={"kind": "flip_all"})
    prep = pr.prepare(cfg, progress=False)
    assert (prep.inputs.synthetic_kd.y == 0).all() and len(prep.fm_poisoned) == len(prep.synthetic_clean)
    res = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    assert res.final["asr"] > 0.9  # a model trained on all-target data predicts the target
    with pytest.raises(pr.ConfigError, match=r"share=2: input should be less than or equal to 1"):
        pr.load_config("smoke", attack={"kind": "flip_all", "params": {"share": 2}})
    with pytest.raises(TypeError, match="subclass"):
        pr.attacks.register("bad", dict)


# ------------------------------------------------------------------------------------------------ run keys
# keys computed by the code before the package was split into layers, for fixed data digests: a refactor must keep
# them (act_bound's changed on purpose when its unused warm_start parameter was removed; krum's when its default f
# became "the largest the round allows", mm_bm's when it gained init_quantile, and again when it gained fit_draw)
GOLDEN_KEYS = {
    ("smoke", "fm", "none", "iid"): "5064ba038354",
    ("quick", "classic", "krum", "dirichlet"): "a9f0903b07df",
    ("quick", "fm", "mm_bm", "iid"): "bf7415f54cbc",
    ("quick", "both", "none", "dirichlet"): "14e84fc98c86",
}
DIGESTS = {"public": "p", "clients": "c", "test": "t", "synthetic": "s", "results_version": 1}


@pytest.mark.unit
@pytest.mark.parametrize("cell", sorted(GOLDEN_KEYS))
def test_run_keys_are_those_of_earlier_versions(cell):
    from paper_repro.results import run_key

    profile, attack, defense, partition = cell
    data = {"partition": partition, **({"beta": 0.5} if partition == "dirichlet" else {})}
    cfg = pr.load_config(profile, attack={"kind": attack}, defense={"name": defense}, data=data, seed=1)
    assert run_key(cfg, {**DIGESTS, "defense": pr.defenses.resolved_params(defense)}) == GOLDEN_KEYS[cell]


@pytest.mark.unit
def test_a_run_key_covers_the_code_the_run_executes_and_no_other_defense(tmp_path):
    import shutil

    from paper_repro.attacks import FMPoisoning
    from paper_repro.codehash import PACKAGE, run_code_digest
    from paper_repro.defenses import ActBound, Defense, MMBMNeuron

    root = tmp_path / "pkg"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))

    def digests():
        return {
            name: run_code_digest(FMPoisoning, cls, root=root)
            for name, cls in (("none", Defense), ("act_bound", ActBound), ("mm_bm_neuron", MMBMNeuron))
        }

    def edit(rel, old, new):
        f = root / rel
        assert old in f.read_text(), (rel, old)
        f.write_text(f.read_text().replace(old, new, 1))

    before = digests()
    edit("defenses/mars.py", "kappa: float = 5.0", "kappa: float = 6.0")  # another defense
    edit("defenses/__init__.py", '"none": Defense,', '"none": Defense,\n    "none2": Defense,')  # a registry line
    assert digests() == before
    edit("activation_bounds.py", "return torch.minimum(", "return torch.maximum(")  # act_bound's helper module
    after = digests()
    assert after["none"] == before["none"] and after["act_bound"] != before["act_bound"]
    assert after["mm_bm_neuron"] != before["mm_bm_neuron"]  # subclass of act_bound: same helper
    edit("fl.py", "fl.kd_epochs > 0", "fl.kd_epochs > 1")  # the loop every run executes
    assert all(digests()[k] != after[k] for k in after)


@pytest.mark.unit
def test_the_repository_stands_alone():
    """Nothing a reader gets points at notes outside the repository or at a tracker's issue numbers."""
    import re

    root = PKG.parent
    files = [
        *PKG.rglob("*.py"),
        *(root / "notebooks").rglob("*.ipynb"),
        *(root / "docs").glob("*.md"),
        root / "README.md",
        root / "data" / "README.md",
        *(root / "benchmarks").glob("*.py"),
    ]
    bad = re.compile(r"PAPER\.md|ENVIRONMENT\.md|DESIGN\.md|\.\./shared|(?i:\bissue[ -]\d|\(issue\b|the issue's)")
    hits = [f"{f.relative_to(root)}: {m.group(0)}" for f in files for m in bad.finditer(f.read_text())]
    assert not hits, hits


@pytest.mark.unit
def test_the_components_page_is_current_and_lists_every_parameter():
    """docs/components.md is what ``python -m paper_repro components`` prints now: every registered attack and
    defense, every field of its ``Params`` (regenerate with ``--out docs/components.md``)."""
    from paper_repro.catalog import KINDS, markdown

    page = markdown()
    assert (PKG.parent / "docs" / "components.md").read_text() == page, (
        "run: python -m paper_repro components --out docs/components.md"
    )
    for reg in KINDS.values():
        for name in reg.names():
            assert f"### `{name}`" in page
            assert all(f"| `{r['name']}` |" in page for r in reg.params(name))


@pytest.mark.unit
def test_run_flags_are_made_from_the_config_and_the_registries():
    """Every config field (but component params, which get one flag per parameter) is a typed ``run`` flag; the
    flags given become the nested overrides ``load_config`` takes; a flag not given keeps the profile's value."""
    import dataclasses
    import typing

    from paper_repro.__main__ import _parser
    from paper_repro.cliargs import config_overrides

    run = _parser()._subparsers._group_actions[0].choices["run"]
    flags = {o for a in run._actions for o in a.option_strings}
    for section, sub in typing.get_type_hints(pr.Config).items():
        if dataclasses.is_dataclass(sub):
            for f in dataclasses.fields(sub):
                if f.name not in ("params", "kind", "name", "partition"):
                    assert f"--{section}.{f.name}" in flags
    assert "--defense.params.max_norm" in flags and "--attack.params.steps" in flags
    a = _parser().parse_args(
        [
            "run",
            "--fl.lr",
            "0.05",
            "--attack.fm_stages",
            "init",
            "--fl.fusion",
            "false",
            "--defense.params.sites",
            '["relu1"]',
            "--defense.params.deploy",
            "clients",
        ]
    )
    assert config_overrides(a) == {
        "fl": {"lr": 0.05, "fusion": False},
        "attack": {"fm_stages": ["init"]},
        "defense": {"params": {"sites": ["relu1"], "deploy": "clients"}},
    }
    over = config_overrides(a)
    over["defense"]["name"] = "act_bound"
    cfg = pr.load_config("smoke", **over)
    assert cfg.fl.lr == 0.05 and cfg.fl.fusion is False and cfg.attack.fm_stages == ("init",)
    assert cfg.fl.num_rounds == pr.load_config("smoke").fl.num_rounds  # not given: the profile's value


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["attacks", "defenses"])
def test_every_components_parameters_survive_the_trip_to_a_worker_process(kind):
    """``--jobs 2`` sends each run's built attack and defense to a worker by pickle. A variant's parameters
    (``params.variant``: MM-BM, MMAC, act_bound_dm) are a new class under its parent's name, which pickle refused
    ("not the same object") until the registry named them after their component."""
    import pickle

    registry = getattr(pr, kind).REGISTRY
    for name in registry.names():
        p = registry.lookup(name).Params()
        back = pickle.loads(pickle.dumps(p))
        assert type(back) is type(p) and back == p, name


class _ScaleDownMore(_ScaleDown):
    """A user's variant of the toy: only a default differs."""

    Params = variant(_ScaleDown.Params, factor=0.25)


@pytest.mark.unit
def test_a_users_variant_pickles_once_registered():
    import pickle

    with pytest.raises(pickle.PicklingError, match="Can.t pickle"):
        pickle.dumps(_ScaleDownMore.Params())  # the parent's name finds the parent
    pr.defenses.register("scale_down_more", _ScaleDownMore)
    try:
        assert pickle.loads(pickle.dumps(_ScaleDownMore.Params())).factor == 0.25
    finally:
        del pr.defenses.REGISTRY["scale_down_more"]
