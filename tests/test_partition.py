import numpy as np
import pytest

from paper_repro import partition as P


def _labels():
    return np.repeat(np.arange(10), 50)  # 500 samples, 50 per class


def _is_partition(parts, n):
    allidx = np.concatenate(parts)
    return len(allidx) == n and len(np.unique(allidx)) == n


def test_iid_sizes_differ_by_at_most_one_and_cover_everything():
    parts = P.iid(_labels(), 7, np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and _is_partition(parts, 500)


def test_dirichlet_respects_min_size_and_is_seeded():
    a = P.dirichlet(_labels(), 10, 0.1, np.random.default_rng(3), min_size=5)
    b = P.dirichlet(_labels(), 10, 0.1, np.random.default_rng(3), min_size=5)
    assert _is_partition(a, 500) and min(len(p) for p in a) >= 5
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_dirichlet_small_beta_is_more_skewed_than_large_beta():
    lab = _labels()

    def skew(beta):
        parts = P.dirichlet(lab, 10, beta, np.random.default_rng(0), min_size=1)
        return np.mean([np.bincount(lab[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.1) > skew(100.0) + 0.2


def test_shards_give_each_client_few_labels():
    parts = P.shards(_labels(), 10, 2, np.random.default_rng(0))
    assert _is_partition(parts, 500)
    assert all(len(np.unique(_labels()[p])) <= 2 for p in parts)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="beta"):
        P.dirichlet(_labels(), 10, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="cannot give"):
        P.iid(np.zeros(3), 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown partition"):
        P.make_partition(_labels(), 2, "pathological", np.random.default_rng(0))
