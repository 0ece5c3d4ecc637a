"""Backgrounds for the defense study: the busy-region share by hand, and the textured composite."""

from __future__ import annotations

import numpy as np
import pytest

from paper_repro import backgrounds as bg
from paper_repro.data import ImageSet

pytestmark = pytest.mark.unit


def test_region_busy_share_counts_images_with_a_bright_pixel_in_the_region():
    x = np.zeros((4, 1, 28, 28), dtype=np.uint8)
    x[0, 0, 27, 27] = 51  # in the corner 3×3, just above 50
    x[1, 0, 26, 25] = 50  # in it, but not above 50
    x[2, 0, 0, 0] = 255  # bright, outside
    assert bg.region_busy_share(x, slice(25, 28), slice(25, 28)) == 0.25
    assert bg.region_busy_share(x, slice(0, 28), slice(0, 28)) == 0.5
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        bg.region_busy_share(x[:, 0], slice(0, 3), slice(0, 3))


def test_composite_keeps_garment_pixels_and_shows_the_photo_elsewhere():
    x = np.array([[[[0, 21], [20, 200]]]], dtype=np.uint8)
    crops = np.array([[[7, 8], [9, 10]]], dtype=np.uint8)
    out = bg.composite(x, crops)
    np.testing.assert_array_equal(out, [[[[7, 21], [9, 200]]]])  # 20 is background (not brighter than 20)
    assert x[0, 0, 0, 0] == 0  # the input is not changed
    with pytest.raises(ValueError, match="grey images"):
        bg.composite(x, crops[:, :1])


def test_textured_sets_are_deterministic_and_textured():
    rng = np.random.default_rng(0)
    x = np.zeros((6, 1, 28, 28), dtype=np.uint8)
    x[:, :, 8:20, 8:20] = 180  # a bright garment in the middle, black around it
    data = ImageSet(x, np.arange(6) % 2, ("a", "b"))
    a, b = bg.textured(data, seed=3), bg.textured(data, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, bg.textured(data, seed=4).x)
    np.testing.assert_array_equal(a.y, data.y)
    assert (a.x[:, :, 8:20, 8:20] == 180).all()  # the garment stays
    corner = a.x[:, 0, 25:, 25:].reshape(6, -1)
    assert (corner.std(1) > 0).all() and bg.region_busy_share(a.x, slice(25, 28), slice(25, 28)) > 0.5
    crops = bg.photo_crops(3, 28, rng)
    assert crops.shape == (3, 28, 28) and crops.dtype == np.uint8


def test_the_textured_dataset_needs_its_own_fm_and_loads_offline():
    import paper_repro as pr
    from paper_repro.splits import load_run_dataset

    with pytest.raises(ValueError, match="trained on plain"):
        pr.load_config("quick", data={"dataset": "fashion_mnist_textured"})
    cfg = pr.load_config(
        "quick", data={"dataset": "fashion_mnist_textured"}, fm={"checkpoint": "data/fm/fashion_mnist_textured_ddpm"}
    )
    assert cfg.data.dataset == "fashion_mnist_textured"
    train, test = load_run_dataset("fashion_mnist_textured")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert bg.region_busy_share(test.x[:2000], slice(25, 28), slice(25, 28)) > 0.5  # the corner is no longer black


def test_placement_shares_read_the_square_where_the_patch_goes():
    from paper_repro.studies.defense_study import placement_shares
    from paper_repro.triggers import badnets_patch

    x = np.zeros((4, 1, 28, 28), np.uint8)
    x[:2] = badnets_patch(x[:2], position="centre")  # two of four images busy at the centre only
    shares = placement_shares(x)
    assert shares == {"corner": 0.0, "centre": 0.5, "garment": 0.0}
