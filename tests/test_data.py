import numpy as np
import pytest

from paper_repro.data import DataNotFoundError, ImageSet, load_fashion_mnist, split_public, to_float, to_uint8


def test_imageset_validates_and_is_read_only():
    with pytest.raises(ValueError, match="N, C, H, W"):
        ImageSet(np.zeros((2, 4, 4), np.uint8), np.zeros(2), ("a",))
    with pytest.raises(ValueError, match="labels"):
        ImageSet(np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 3]), ("a", "b"))
    src = np.zeros((2, 1, 4, 4), np.uint8)
    s = ImageSet(src, np.array([0, 1]), ("a", "b"))
    src[0] = 9  # the set holds its own copy
    assert s.x.sum() == 0 and not s.x.flags.writeable


def test_float_roundtrip_is_exact_on_uint8():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    t = to_float(x)
    assert t.min() == -1 and t.max() == 1
    assert np.array_equal(to_uint8(t), x)


def test_public_split_is_disjoint_from_clients_and_seeded(blobs):
    train, test = blobs
    s = split_public(train, test, public_size=100, client_size=300, test_size=50, seed=0)
    s2 = split_public(train, test, public_size=100, client_size=300, test_size=50, seed=0)
    assert len(s.public) == 100 and len(s.clients) == 300 and len(s.test) == 50
    assert s.public.digest() == s2.public.digest()
    pub = {r.tobytes() for r in s.public.x}
    # blobs are noisy, so identical rows would mean the same sample landed on both sides
    assert not any(r.tobytes() in pub for r in s.clients.x)
    with pytest.raises(ValueError, match="exceeds"):
        split_public(train, test, public_size=500, client_size=500)


def test_the_test_halves_split_the_test_images_by_index_parity(blobs):
    import paper_repro as pr
    from paper_repro.splits import run_splits, test_half

    _, test = blobs
    marked = test.with_arrays(x=np.arange(len(test), dtype=np.int64)[:, None, None, None] % 256 * np.ones_like(test.x))
    even, odd = test_half(marked, "even"), test_half(marked, "odd")
    assert len(even) + len(odd) == len(marked) and len(even) == (len(marked) + 1) // 2
    assert (even.x[:, 0, 0, 0] % 2 == 0).all() and (odd.x[:, 0, 0, 0] % 2 == 1).all()  # index parity (i % 256 keeps it)
    assert test_half(marked, "all") is marked
    with pytest.raises(ValueError, match="test half"):
        test_half(marked, "first")
    with pytest.raises(ValueError, match="data.test_half"):
        pr.load_config("quick", data={"test_half": "first"})
    full = run_splits(pr.load_config("smoke")).test
    halves = [run_splits(pr.load_config("smoke", data={"test_half": h})).test for h in ("even", "odd")]
    assert sum(map(len, halves)) == len(full) and halves[0].digest() != halves[1].digest()


def test_missing_fashion_mnist_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_REPRO_DATA", str(tmp_path))
    monkeypatch.setattr("paper_repro.data.DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(download=False)


def test_fashion_mnist_loads_when_installed():
    try:
        train, test = load_fashion_mnist(download=False)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed (make data installs it)")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert (train.counts() == 6000).all()
    assert abs(train.x.mean() / 255 - 0.2860) < 1e-3


def test_seed_intervals_are_student_t_and_separation_needs_disjoint_intervals():
    import pandas as pd
    from scipy import stats

    from paper_repro.tables import seed_intervals, separated

    df = pd.DataFrame(
        {
            "defense": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
            "asr": [0.1, 0.2, 0.3, 0.8, 0.9, 1.0, 0.25, 0.3, 0.35],
            "status": ["ok"] * 8 + ["diverged"],
        }
    )
    s = seed_intervals(df, by=("defense",), metrics=("asr",)).set_index("defense")
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert np.isclose(s.loc["a", "asr_lo"], max(0.2 - half, 0.0)) and np.isclose(s.loc["a", "asr_hi"], 0.2 + half)
    assert s.loc["b", "asr_hi"] == 1.0 and s.loc["b", "asr_lo"] < 0.9  # a share's interval stays within [0, 1]
    assert s.loc["c", "n"] == 2 and s.loc["c", "diverged"] == 1
    assert separated(s.loc["a"], s.loc["b"], "asr") and not separated(s.loc["a"], s.loc["c"], "asr")
