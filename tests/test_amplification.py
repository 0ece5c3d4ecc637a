"""H2's margin decomposition (paper_repro/studies/amplification.py) on cases small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paper_repro.studies import amplification as amp

pytestmark = pytest.mark.unit


def test_selectivity_is_zero_for_an_even_unit_and_one_for_a_single_class_unit():
    labels = np.array([0, 0, 1, 1, 2, 2])
    acts = torch.tensor(
        [[1.0, 3.0, 0.0], [1.0, 3.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    )
    top, sel = amp.class_selectivity(acts, labels, 3)
    assert top[1] == 0 and sel[1] == pytest.approx(1.0)  # fires for class 0 only
    assert sel[0] == pytest.approx(0.0) and sel[2] == 0.0  # even, and silent
    with pytest.raises(ValueError, match=r"none of \[2\]"):
        amp.class_selectivity(acts[:4], labels[:4], 3)


def test_the_terms_sum_to_the_exact_change_of_the_margin_and_name_the_true_class_unit():
    # two units, three classes, target 0; image of class 1. Unit 0 carries class 1's evidence, unit 1 the target's.
    weight = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    acts = torch.tensor([[3.0, 1.0]])
    bound = torch.tensor([1.0, 5.0])  # clips unit 0 from 3 to 1; unit 1 untouched
    labels = np.array([1])
    terms = amp.margin_terms(acts, bound, weight, labels, target=0)
    plain = weight @ acts[0]
    clipped = weight @ torch.minimum(acts[0], bound)
    exact = (clipped[0] - clipped[1]) - (plain[0] - plain[1])
    assert terms.sum() == pytest.approx(float(exact)) == pytest.approx(4.0)  # (W[0,0] − W[1,0]) · (1 − 3) = 4
    units = amp.decompose(acts, bound, weight, labels, 0, np.array([1, 0]), np.array([0.9, 0.2]))
    assert units.loc[0, "unit"] == 0 and units.loc[0, "own_class_term"] == pytest.approx(4.0)
    s = amp.summary(units)
    assert s == {"margin_change": 4.0, "from_selective": 4.0, "from_own_class": 4.0, "units_clipped": 1}


def test_the_decomposition_of_a_model_adds_up_to_what_its_relu3_bounds_do_to_the_logits():
    from types import SimpleNamespace

    from paper_repro.activation_bounds import clip_hooks, record_activations
    from paper_repro.data import ImageSet
    from paper_repro.models import build_model

    rng = np.random.default_rng(0)
    classes = tuple(str(c) for c in range(10))
    syn = ImageSet(rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8), np.arange(40) % 10, classes)
    test = ImageSet(rng.integers(0, 256, (20, 1, 28, 28), dtype=np.uint8), np.arange(20) % 10, classes)
    model = build_model("cnn", (1, 28, 28), 10, 0).eval()
    a_syn = record_activations(model, syn.tensors()[0], ["relu3"])["relu3"]
    bounds = {"relu3": torch.quantile(a_syn, 0.5, dim=0)}  # tight: many units clipped
    trig = test.tensors()[0][test.y != 0]
    run = SimpleNamespace(
        bounds=bounds,
        model=model,
        cfg=SimpleNamespace(attack=SimpleNamespace(target_class=0)),
        opts=SimpleNamespace(device="cpu"),
        prep=SimpleNamespace(inputs=SimpleNamespace(test=test, synthetic_kd=syn)),
        paired_inputs=lambda n: (trig[:n], trig[:n]),
        activations=lambda x, site, bounded: record_activations(model, x, [site])[site].flatten(1),
    )
    units = amp.margin_decomposition(run, n=18)
    labels = test.y[test.y != 0]
    with torch.no_grad():
        plain = model(trig)
        with clip_hooks(model, bounds):
            clipped = model(trig)
    idx = torch.arange(len(labels))
    y = torch.as_tensor(labels)
    exact = ((clipped[:, 0] - clipped[idx, y]) - (plain[:, 0] - plain[idx, y])).mean()
    assert units["clipped_share"].gt(0).any()
    assert units["margin_term"].sum() == pytest.approx(float(exact), abs=1e-5)
    with pytest.raises(ValueError, match="bounded no 'relu2'"):
        amp.margin_decomposition(run, site="relu2")
