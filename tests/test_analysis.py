"""Analysis (F3, notebook 05), ablations (F6) and the committed tables (T1, F1): smoke tier."""

import numpy as np
import pandas as pd
import pytest
import torch

import paper_repro as pr
from paper_repro import tables
from paper_repro.models import flat_state
from paper_repro.studies import activations as analysis
from paper_repro.studies import grid
from paper_repro.studies.ablations import ABLATIONS, run_ablations


@pytest.fixture(scope="module")
def fm_run():
    return analysis.train_and_bound(pr.load_config("smoke", attack={"kind": "fm"}), progress=False)


def test_bounded_activations_never_exceed_the_learned_bounds(fm_run):
    site = list(fm_run.bounds)[-1]
    clean, trig = fm_run.paired_inputs(40)
    for x in (clean, trig):
        a = fm_run.activations(x, site, bounded=True)
        assert (a <= fm_run.bounds[site].flatten() + 1e-6).all()
    # and the unbounded model does exceed them somewhere (the bounds do something)
    assert (fm_run.activations(trig, site, bounded=False) > fm_run.bounds[site].flatten() + 1e-6).any()


def test_paired_inputs_are_the_same_images_with_and_without_the_trigger(fm_run):
    clean, trig = fm_run.paired_inputs(30)
    assert clean.shape == trig.shape
    diff = (clean != trig).flatten(1).any(1)
    assert diff.all()  # every image carries the trigger ...
    changed = (clean != trig).any(0).any(0)  # ... and only inside the trigger patch
    assert changed.sum() <= fm_run.cfg.attack.trigger_size**2


def test_unit_profile_is_sorted_by_the_trigger_effect_and_carries_the_bounds(fm_run):
    prof = analysis.unit_profile(fm_run, n=40)
    assert prof["trigger_gap"].is_monotonic_decreasing
    site = prof["site"].iloc[0]
    b = fm_run.bounds[site].flatten().numpy()
    np.testing.assert_allclose(prof["bound"].to_numpy(), b[prof["unit"].to_numpy()])


def test_activation_scores_are_tidy(fm_run):
    s = analysis.activation_scores(fm_run, n=30, top_k=5)
    assert set(s["model"]) == {"no defense", "act_bound"} and set(s["input"]) == {"clean", "triggered"}
    assert len(s) == 4 * 30 and (s["attack"] == "fm").all()


def test_knob_sweep_leaves_the_weights_untouched(fm_run):
    before = flat_state(fm_run.model).clone()
    sweep = analysis.knob_sweep(
        fm_run, {"q1": {"init_quantile": 1.0}, "chan": {"granularity": "channel"}}, progress=False
    )
    assert list(sweep["variant"]) == ["no defense", "q1", "chan"]
    assert torch.equal(before, flat_state(fm_run.model))


def test_ablation_default_point_shares_the_grid_run(tmp_path):
    g = grid.run_grid(
        "smoke", ["act_bound"], attacks=("fm",), partitions=("iid",), results_dir=tmp_path, progress=False
    )
    abl = run_ablations("smoke", ["penalty_weight"], results_dir=tmp_path, progress=False)
    assert list(abl["value"]) == list(ABLATIONS["penalty_weight"].values)
    default = abl[abl["value"] == pr.defenses.resolved_params("act_bound")["c0"]]
    assert default["run"].item() == g["run"].item()
    # the grid table leaves the ablation variants out; it holds act_bound and the no-defense run it was served from
    assert sorted(grid.collect(tmp_path, "smoke")["defense"]) == ["act_bound", "none"]


def test_unknown_ablation_names_the_known_ones():
    with pytest.raises(ValueError, match="poison_ratio"):
        run_ablations("smoke", ["poison_share"])


def test_samples_round_trip(tmp_path):
    prep = pr.prepare(pr.load_config("smoke", attack={"kind": "fm"}), progress=False)
    p = tables.export_samples(
        prep.synthetic_clean, prep.inputs.synthetic_kd, prep.fm_poisoned, tmp_path / "s.npz", per_class=3
    )
    clean, poisoned, flagged = tables.load_samples(p)
    assert len(clean) == 3 * clean.num_classes and clean.classes == prep.synthetic_clean.classes
    assert len(flagged) and (poisoned.y[flagged] == pr.load_config("smoke").attack.target_class).all()


def test_missing_table_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="paper_repro results"):
        tables.read_table("grid", "quick", tmp_path)
    # a table no `python -m paper_repro` subcommand writes names its own module, not `results`
    with pytest.raises(FileNotFoundError, match=r"python -m paper_repro\.studies\.defense_study --budget"):
        tables.read_table("defense_study", "quick", tmp_path)


def test_compare_published_matches_our_cells_and_marks_missing_ones():
    g = pd.DataFrame(
        {
            "attack": ["fm", "fm"],
            "defense": ["none", "none"],
            "partition": ["iid", "iid"],
            "seed": [0, 1],
            "acc": [0.8, 0.9],
            "asr": [0.9, 1.0],
        }
    )
    pub = pd.DataFrame(
        {
            "source": ["a", "b"],
            "setting": ["x", "y"],
            "acc": [60.0, None],
            "asr": [90.0, 95.0],
            "ours_attack": ["fm", "classic"],
            "ours_defense": ["none", "none"],
            "ours_partition": ["iid", "iid"],
            "differs": ["", ""],
        }
    )
    t = tables.compare_published(g, pub)
    assert t.loc[0, "ours ACC"] == "85.0 ± 7.1" and t.loc[0, "seeds"] == 2
    assert t.loc[1, "ours ASR"] == "not run" and t.loc[1, "published ACC"] == "–"


def test_committed_published_table_points_at_grid_cells():
    pub = pd.read_csv(tables.PUBLISHED)
    assert set(pub["ours_defense"]) <= set(pr.defenses.names())
    assert set(pub["ours_partition"]) <= set(grid.PARTITIONS)


def test_tables_are_never_replaced_by_empty_or_partial_ones(tmp_path):
    from paper_repro.studies.compute import export_tables

    results, out = tmp_path / "results", tmp_path / "tables"
    with pytest.raises(FileNotFoundError, match="no finished smoke grid run"):
        export_tables("smoke", results, out)
    assert not out.exists() or not any(out.iterdir())
    grid.run_grid(
        "smoke", ["none", "median"], attacks=("none",), partitions=("iid",), results_dir=results, progress=False
    )
    export_tables("smoke", results, out)
    before = (out / "grid_smoke.csv").read_bytes()
    import shutil

    for run in results.glob("smoke_none_median_*"):
        shutil.rmtree(run)
    with pytest.raises(FileNotFoundError, match="1 cells of .* have no finished run"):
        export_tables("smoke", results, out)
    assert (out / "grid_smoke.csv").read_bytes() == before


def test_heatmap_labels_shorten_only_where_they_stay_distinct():
    from paper_repro import plots
    from paper_repro.plots import _short_labels

    got = _short_labels(["FM SIG (clean label)", "FM SIG (dirty label)", "model replacement (constrain-and-scale)"])
    assert got == ["FM SIG (clean label)", "FM SIG (dirty label)", "model replacement"]
    # the helper sits beside the heatmap: the style decorator stays on the plot, not on the helper
    assert hasattr(plots.defense_heatmap, "__wrapped__") and not hasattr(_short_labels, "__wrapped__")


def test_heatmap_writes_a_dash_in_a_cell_not_run_and_draws_no_grid_through_it():
    import matplotlib.pyplot as plt

    from paper_repro import plots

    cols = pd.MultiIndex.from_product([["acc", "asr"], ["classic", "fm"]])
    table = pd.DataFrame([[0.8, 0.81, 0.9, 0.95], [0.79, float("nan"), 0.1, float("nan")]], ["none", "krum"], cols)
    fig = plots.defense_heatmap(table)
    for ax in fig.axes[:2]:
        texts = [t.get_text() for t in ax.texts]
        assert texts.count("–") == 1, texts  # the one cell krum did not run, in each panel
        assert not any(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())
    plt.close(fig)


def test_breadth_pivot_orders_attacks_as_asked_and_others_after():
    from paper_repro.studies.attacks import breadth_pivot

    df = pd.DataFrame(
        {"attack": ["b", "a", "c", "b"], "defense": ["none", "none", "none", "act_bound"], "seed": [1, 1, 1, 1],
         "acc": [0.8, 0.7, 0.6, 0.5], "asr": [0.9, 0.1, 0.2, 0.3]}
    )  # fmt: skip
    wide = breadth_pivot(df, order=["c", "b"])
    assert list(wide["asr"].columns) == ["c", "b", "a"]
    assert wide.loc["act_bound", ("asr", "b")] == 0.3 and np.isnan(wide.loc["act_bound", ("asr", "a")])
