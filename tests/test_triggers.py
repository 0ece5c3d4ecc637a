import numpy as np
import pytest

from paper_repro.data import ImageSet
from paper_repro.triggers import Trigger, asr_set, badnets_patch, blend, poison


def test_badnets_sets_exactly_the_bottom_right_square_and_copies():
    # Prepare
    x = np.zeros((2, 1, 5, 5), np.uint8)
    # Execute
    y = badnets_patch(x, 3)
    # Assert
    assert x.sum() == 0, "input must not change"
    assert (y[:, :, 2:, 2:] == 255).all() and y.sum() == 2 * 9 * 255


def test_badnets_too_large_raises():
    with pytest.raises(ValueError, match="larger than"):
        badnets_patch(np.zeros((1, 1, 2, 2), np.uint8), 3)


def test_blend_is_the_convex_combination():
    x = np.full((1, 1, 2, 2), 100, np.uint8)
    pat = np.full((1, 2, 2), 200, np.uint8)
    assert (blend(x, pat, 0.25) == 125).all()


def test_poison_takes_ratio_of_each_nontarget_class_and_leaves_input_untouched():
    # Prepare: 3 classes × 10 images
    data = ImageSet(np.zeros((30, 1, 6, 6), np.uint8), np.repeat(np.arange(3), 10), ("a", "b", "c"))
    before = data.x.copy(), data.y.copy()
    # Execute
    new, idx = poison(data, Trigger("badnets", 3), target=0, ratio=0.3, rng=np.random.default_rng(0))
    # Assert
    assert len(idx) == 6 and set(data.y[idx]) == {1, 2}
    assert (np.bincount(data.y[idx])[1:] == 3).all()
    assert (new.y[idx] == 0).all() and (new.x[idx][:, :, 3:, 3:] == 255).all()
    untouched = np.setdiff1d(np.arange(30), idx)
    assert (new.x[untouched] == 0).all() and np.array_equal(new.y[untouched], data.y[untouched])
    assert np.array_equal(data.x, before[0]) and np.array_equal(data.y, before[1])
    with pytest.raises(ValueError):
        data.x[0, 0, 0, 0] = 1  # read-only: in-place poisoning is impossible


@pytest.mark.parametrize("ratio", [-0.01, 1.01])
def test_poison_ratio_outside_unit_interval_raises(tiny_set, ratio):
    with pytest.raises(ValueError, match="outside"):
        poison(tiny_set, Trigger(), 0, ratio, np.random.default_rng(0))


def test_asr_set_drops_the_target_class_and_triggers_the_rest(tiny_set):
    s = asr_set(tiny_set, Trigger("badnets", 2), target=2)
    assert list(s.y) == [0, 1, 1]
    assert (s.x[:, :, 2:, 2:] == 255).all()


def test_random_patch_puts_one_square_per_image_at_varying_places_and_repeats_with_the_seed():
    x = np.zeros((40, 1, 12, 12), np.uint8)
    y = Trigger("random_patch", size=3, seed=0).apply(x)
    assert x.sum() == 0, "input must not change"
    assert ((y == 255).reshape(40, -1).sum(1) == 9).all()  # one whole 3×3 square each
    corners = {tuple(np.argwhere(img[0] == 255).min(0)) for img in y}
    assert len(corners) > 10  # positions vary between images
    assert (Trigger("random_patch", size=3, seed=0).apply(x) == y).all()
    assert (Trigger("random_patch", size=3, seed=1).apply(x) != y).any()


def test_sig_adds_a_horizontal_sinusoid_of_the_given_amplitude_everywhere():
    x = np.full((2, 1, 4, 24), 128, np.uint8)
    y = Trigger("sig", alpha=20 / 255).apply(x).astype(int) - 128
    assert x[0, 0, 0, 0] == 128
    assert np.abs(y).max() == 20 and (y[:, :, 0, :] == y[:, :, 3, :]).all()  # same in every row
    assert (y[..., 0] == 0).all() and (y[..., 1] > 0).all()  # sin(0) = 0, then rises


def test_all_to_all_poisons_every_class_toward_the_next_one_and_tests_on_every_image(tiny_set):
    data = ImageSet(np.zeros((30, 1, 6, 6), np.uint8), np.repeat(np.arange(3), 10), ("a", "b", "c"))
    new, idx = poison(
        data, Trigger("badnets", 3), target=0, ratio=0.3, rng=np.random.default_rng(0), mapping="all_to_all"
    )
    assert (np.bincount(data.y[idx]) == 3).all()  # the target class is poisoned too
    assert np.array_equal(new.y[idx], (data.y[idx] + 1) % 3)
    assert len(asr_set(tiny_set, Trigger("badnets", 2), target=2, mapping="all_to_all")) == len(tiny_set)
    with pytest.raises(ValueError, match="mapping"):
        poison(data, Trigger(), 0, 0.3, np.random.default_rng(0), mapping="one_to_many")


@pytest.mark.smoke
def test_an_all_to_all_run_counts_a_hit_on_each_images_own_next_class():
    import paper_repro as pr

    cfg = pr.load_config("smoke", attack={"kind": "fm", "mapping": "all_to_all"})
    inp = pr.prepare(cfg, progress=False).inputs
    assert np.array_equal(inp.target_class, (inp.asr_test.y + 1) % inp.asr_test.num_classes)
    with pytest.raises(ValueError, match="attack.mapping"):
        pr.load_config("smoke", attack={"mapping": "all_to_none"})


@pytest.mark.unit
def test_a_trigger_that_changes_no_pixel_is_refused_on_the_actual_images():
    """SIG at f = 6 on a 12-pixel-wide image is sin(πj) = 0 everywhere; an ASR measured with it would measure
    nothing. On 28-pixel-wide images the same trigger changes pixels and is accepted."""
    rng = np.random.default_rng(0)
    for w, refused in ((12, True), (28, False)):
        test = ImageSet(rng.integers(0, 256, (20, 1, w, w), dtype=np.uint8), np.arange(20) % 4, tuple("abcd"))
        if refused:
            with pytest.raises(ValueError, match="changes no pixel of the 15 ASR test images"):
                asr_set(test, Trigger("sig", alpha=0.08), 0)
        else:
            assert len(asr_set(test, Trigger("sig", alpha=0.08), 0)) == 15


@pytest.mark.unit
def test_a_badnets_square_sits_where_its_position_says():
    from paper_repro.config import TRIGGER_POSITIONS
    from paper_repro.triggers import POSITIONS, Trigger

    assert TRIGGER_POSITIONS == POSITIONS
    x = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    lit = {p: np.argwhere(Trigger("badnets", 3, position=p).apply(x)[0, 0] == 255) for p in POSITIONS}
    assert lit["corner"].min(0).tolist() == [25, 25] and lit["corner"].max(0).tolist() == [27, 27]
    assert lit["centre"].min(0).tolist() == [13, 13] and lit["centre"].max(0).tolist() == [15, 15]
    assert lit["garment"].min(0).tolist() == [8, 13] and lit["garment"].max(0).tolist() == [10, 15]
    assert all(len(v) == 9 for v in lit.values())
    assert not x.any()  # the input is not changed
    with pytest.raises(ValueError, match="unknown trigger position"):
        Trigger("badnets", 3, position="left").apply(x)


@pytest.mark.unit
def test_a_position_is_refused_for_a_trigger_without_one():
    import paper_repro as pr

    cfg = pr.load_config("quick", attack={"kind": "fm", "trigger_position": "centre"})
    assert cfg.attack.trigger_position == "centre"
    with pytest.raises(ValueError, match="has no position"):
        pr.load_config("quick", attack={"kind": "fm", "trigger": "sig", "trigger_position": "centre"})
    with pytest.raises(ValueError, match="attack.trigger_position"):
        pr.load_config("quick", attack={"kind": "fm", "trigger_position": "middle"})
