"""Claim tier: the quick profile (Fashion-MNIST, shipped FM checkpoint, seed 0) run by the current code shows the
attacks working and reproduces the committed seed-0 cells, on which ``tests/test_targets.py`` asserts the targets
over every seed. Thresholds are fixed targets; they are not tuned to the measured numbers. Minutes on 2 CPU cores.
"""

import pytest

import paper_repro as pr
from paper_repro.data import DataNotFoundError, load_dataset, public_splits
from paper_repro.fm import load_fm, synthetic_set
from paper_repro.tables import read_table

# the same code on two 2-core CPUs (with and without AVX-512) gave |ΔACC| 0.0002 and |ΔASR| 0.006 on the no-defense
# FM cell (IID, seed 0): float rounding differs between instruction sets. The tolerance is five times that.
ACC_TOL, ASR_TOL = 0.01, 0.03

pytestmark = pytest.mark.claims


@pytest.fixture(scope="module")
def claims_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("claims")


@pytest.fixture(scope="module")
def quick_runs(claims_dir):
    try:
        load_dataset("fashion_mnist")
    except DataNotFoundError as e:
        pytest.skip(str(e))
    # act_bound on the FM attack is served from the FM run's own training, side by side (one training for both)
    cells = [("none", "none"), ("classic", "none"), ("fm", "none"), ("fm", "act_bound")]
    runs = pr.run_many(
        [pr.load_config("quick", attack={"kind": k}, defense=d, seed=0) for k, d in cells],
        results_dir=claims_dir,
        progress=False,
    )
    return {k if d == "none" else (d, k): r.final for (k, d), r in zip(cells, runs)}


@pytest.fixture(scope="module")
def defended_runs(quick_runs, claims_dir):
    return {
        (d, k): pr.run_experiment(
            pr.load_config("quick", attack={"kind": k}, defense={"name": d}, seed=0),
            results_dir=claims_dir,
            progress=False,
        ).final
        for d, k in (("act_bound", "fm"), ("median", "fm"), ("median", "classic"))
    }


def test_clean_run_is_accurate_and_not_backdoored(quick_runs):
    assert quick_runs["none"]["acc"] >= 0.80
    assert quick_runs["none"]["asr"] <= 0.05


def test_fm_attack_plants_the_backdoor_without_any_malicious_client(quick_runs):
    assert quick_runs["fm"]["asr"] >= 0.90
    assert quick_runs["fm"]["acc"] >= quick_runs["none"]["acc"] - 0.05  # stealthy: clean accuracy barely moves


def test_classic_attack_asr_clearly_above_clean(quick_runs):
    assert quick_runs["classic"]["asr"] >= quick_runs["none"]["asr"] + 0.20


def test_shipped_fm_draws_images_a_real_data_classifier_recognises():
    from paper_repro.fm.quality import synthetic_accuracy

    cfg = pr.load_config("quick")
    sp = public_splits(cfg)
    load_fm(cfg, sp.public)  # the shipped checkpoint matches this public split
    syn, _ = synthetic_set(cfg, sp.public, progress=False)
    q = synthetic_accuracy(syn, sp.clients, sp.test)
    assert q["real_test_acc"] >= 0.85
    assert q["synthetic_acc"] >= 0.80


CELLS = [
    ("none", "none"),
    ("none", "fm"),
    ("none", "classic"),
    ("act_bound", "fm"),
    ("median", "fm"),
    ("median", "classic"),
]


@pytest.mark.parametrize("defense, attack", CELLS)
def test_the_current_code_reproduces_the_committed_seed0_cell(quick_runs, defended_runs, defense, attack):
    now = quick_runs[attack] if defense == "none" else defended_runs[(defense, attack)]
    g = read_table("grid", "quick")
    (committed,) = g[(g.defense == defense) & (g.attack == attack) & (g.partition == "iid") & (g.seed == 0)].to_dict(
        "records"
    )
    assert abs(now["acc"] - committed["acc"]) <= ACC_TOL
    assert abs(now["asr"] - committed["asr"]) <= ASR_TOL


def test_update_comparing_defense_does_not_stop_the_fm_attack(defended_runs):
    assert defended_runs[("median", "fm")]["asr"] >= 0.8  # no malicious client to find: the backdoor stays
