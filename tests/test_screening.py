"""Data-side defenses (spectral signatures, activation clustering): the server screens its synthetic set before the
rounds. Hand-computed cases for the scores and the removals, the step that applies a screen, and the run path."""

import numpy as np
import pytest
import torch
from torch import nn

import paper_repro as pr
from paper_repro.data import ImageSet
from paper_repro.defenses import Defense, ScreenContext
from paper_repro.defenses.activation_clustering import two_clusters
from paper_repro.defenses.spectral import spectral_scores
from paper_repro.fl import screen_synthetic

OUTLIERS = [3, 11]


def _outlier_set(labels=None):
    """20 four-pixel images of one label: 18 near (100, 100, 0, 0), two (3 and 11) lit on pixels 2 and 3."""
    rng = np.random.default_rng(0)
    x = np.zeros((20, 1, 2, 2), dtype=np.uint8)
    x[:, 0, 0, :] = 100 + rng.integers(-3, 4, size=(20, 2))
    x[OUTLIERS, 0, 1, :] = 200
    y = np.zeros(20, dtype=np.int64) if labels is None else labels
    return ImageSet(x, y, [str(c) for c in range(2)])


def _ctx(model=None):
    """A model whose ``"1"`` site is the image itself (Flatten, then ReLU of non-negative pixels)."""
    model = model or nn.Sequential(nn.Flatten(), nn.ReLU())
    return ScreenContext(model, torch.Generator().manual_seed(0))


@pytest.mark.unit
def test_spectral_scores_are_squared_projections_on_the_top_singular_vector():
    # Centred rows (±1, 0) and (0, ±0.1): the top right singular vector is (1, 0), the scores 1, 1, 0, 0
    f = torch.tensor([[2.0, 5.0], [0.0, 5.0], [1.0, 5.1], [1.0, 4.9]])
    np.testing.assert_allclose(spectral_scores(f), [1.0, 1.0, 0.0, 0.0], atol=1e-12)
    assert not spectral_scores(torch.ones(3, 2)).any()  # identical rows: no direction, nothing stands out


@pytest.mark.unit
@pytest.mark.parametrize(
    "name, params",
    [
        ("spectral", {"epsilon": 1 / 15, "site": "1"}),  # 1.5 · ε · 20 = 2 images removed
        ("activation_clustering", {"components": 4, "site": "1"}),
        ("activation_clustering", {"components": 4, "site": "1", "analysis": "silhouette"}),
    ],
)
def test_a_screen_removes_exactly_the_two_lit_images(name, params):
    d = pr.defenses.get(name, **params)
    keep = d.screen(_outlier_set(), _ctx())
    assert sorted(set(range(20)) - set(keep.tolist())) == OUTLIERS


@pytest.mark.unit
def test_screens_work_label_by_label_and_leave_a_label_without_outliers_alone():
    labels = np.array([0] * 10 + [1] * 10)  # outlier 3 under label 0, outlier 11 under label 1
    spectral = pr.defenses.get("spectral", epsilon=0.1, site="1").screen(_outlier_set(labels), _ctx())
    assert sorted(set(range(20)) - set(spectral.tolist())) == OUTLIERS  # ⌊1.5 · 0.1 · 10⌋ = 1 per label
    x = _outlier_set().x.copy()
    x[OUTLIERS, 0, 1, :] = 0  # no outliers: the two clusters are noise of equal size
    ac = pr.defenses.get("activation_clustering", components=2, site="1", size_threshold=0.1)
    assert len(ac.screen(ImageSet(x, np.zeros(20, np.int64), ["0", "1"]), _ctx())) == 20


@pytest.mark.unit
def test_the_silhouette_analysis_keeps_a_clear_split_into_halves():
    x = _outlier_set().x.copy()
    x[:, 0, 1, :] = 0
    x[:10, 0, 1, :] = 200  # half the label lit: a clear split (high silhouette) into two clusters of 10
    halves = ImageSet(x, np.zeros(20, np.int64), ["0", "1"])
    ac = pr.defenses.get("activation_clustering", components=2, site="1", analysis="silhouette")
    assert len(ac.screen(halves, _ctx())) == 20  # a half is not small (ART: share < 0.35 and silhouette > 0.1)
    lax = pr.defenses.get("activation_clustering", components=2, site="1", analysis="silhouette", size_threshold=0.5)
    assert len(lax.screen(halves, _ctx())) == 20  # share 0.5 < 0.5 is false: still kept
    assert len(ac.screen(_outlier_set(), _ctx())) == 18  # two of twenty: small and clearly split


@pytest.mark.unit
def test_two_clusters_splits_two_separated_groups_with_a_high_silhouette():
    f = np.r_[np.zeros((8, 3)), np.ones((4, 3)) * 10] + np.random.default_rng(1).normal(0, 0.01, (12, 3))
    labels, silhouette = two_clusters(f, 1, seed=0)  # one ICA component: the direction that separates them
    assert len(set(labels[:8])) == 1 and len(set(labels[8:])) == 1 and labels[0] != labels[8]
    assert silhouette > 0.9
    _, whitened = two_clusters(f, 3, seed=0)  # three unit-variance components, two of them noise: a weaker split
    assert whitened < silhouette
    assert two_clusters(np.ones((12, 3)), 3, seed=0) == (pytest.approx(np.zeros(12)), 0.0)  # constant: no split


class _KeepEven(Defense):
    name = "keep_even"

    def screen(self, synthetic, ctx):
        return np.arange(0, len(synthetic), 2)


@pytest.mark.unit
def test_screen_step_keeps_what_the_defense_returns_and_records_what_it_removed():
    cfg = pr.load_config("smoke")
    syn = _outlier_set()
    poisoned = np.zeros(20, dtype=bool)
    poisoned[[0, 1, 3]] = True  # removed by keep-even: 1 and 3 of the 3 poisoned, 8 of the 17 others
    inp = pr.fl.FLInputs([], syn, syn, syn, syn, None, 0, poisoned, poisoned)
    out, cols = screen_synthetic(cfg, pr.RunOptions.for_profile("smoke"), _KeepEven(), inp, nn.Flatten())
    assert len(out.synthetic_init) == 10 and out.synthetic_kd is out.synthetic_init  # one set: screened once
    np.testing.assert_array_equal(out.synthetic_init.x, syn.x[::2])
    assert cols == {
        "screen_init_removed": 10,
        "screen_init_tpr": pytest.approx(2 / 3),
        "screen_init_fpr": pytest.approx(8 / 17),
        "screen_kd_removed": 10,
        "screen_kd_tpr": pytest.approx(2 / 3),
        "screen_kd_fpr": pytest.approx(8 / 17),
    }
    assert _KeepEven().screens and not _KeepEven().trains_like_none and not Defense().screens


@pytest.mark.smoke
@pytest.mark.parametrize("name", ["spectral", "activation_clustering"])
def test_a_screening_run_initialises_on_the_kept_set_and_reports_the_screen(tmp_path, name):
    cfg = pr.load_config("smoke", attack={"kind": "fm", "poison_ratio": 0.5}, defense={"name": name})
    d = pr.defenses.get(name)
    assert d.screens and not d.trains_like_none  # its own training, never served from no defense's
    res = pr.run_experiment(cfg, results_dir=tmp_path, progress=False)
    r0 = res.history.iloc[0]
    n = cfg.fm.n_per_class * 10
    assert 0 <= r0["screen_init_removed"] < n and 0 <= r0["screen_init_tpr"] <= 1 and 0 <= r0["screen_init_fpr"] <= 1
    assert res.history[["acc", "asr"]].notna().all().all()
    none_cfg = pr.load_config("smoke", attack={"kind": "fm", "poison_ratio": 0.5})
    none = pr.run_experiment(none_cfg, results_dir=tmp_path, progress=False)
    assert "screen_init_removed" not in none.history


@pytest.mark.unit
def test_the_screening_labels_of_a_held_out_table_resolve_to_their_settings(tmp_path):
    from paper_repro.studies.plans import _heldout_config

    labels = {"setting": "all_to_all", "attack": "fm", "seed": 10}
    cfg = _heldout_config("smoke", {**labels, "defense": "spectral eps0.3"}, tmp_path)
    assert cfg.defense.name == "spectral" and cfg.defense.params["epsilon"] == 0.3
    assert cfg.attack.mapping == "all_to_all" and cfg.seed == 10
    ac = _heldout_config("smoke", {**labels, "defense": "activation_clustering silhouette"}, tmp_path)
    assert ac.defense.params["analysis"] == "silhouette"


@pytest.mark.smoke
def test_the_screening_report_reads_what_each_screen_removed_from_the_ledger(tmp_path, monkeypatch):
    from paper_repro.studies.heldout import heldout_study
    from paper_repro.studies.screening import screening_report

    monkeypatch.setenv("PAPER_REPRO_LEDGER", str(tmp_path / "ledger"))
    opts = pr.RunOptions.for_profile("smoke", ledger=True)
    kw = {"results_dir": tmp_path / "runs", "tables_dir": tmp_path, "progress": False, "options": opts}
    heldout_study("smoke", ("validation",), ("none", "spectral eps0.3"), (0,), table="heldout_screening", **kw)
    rep = screening_report("smoke", tmp_path).set_index("defense")
    assert rep.loc["spectral eps0.3", "screen_init_removed"] > 0 and np.isnan(rep.loc["none", "screen_init_removed"])
    assert 0 <= rep.loc["spectral eps0.3", "screen_init_tpr"] <= 1 and rep["n"].eq(1).all()
