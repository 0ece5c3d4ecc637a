"""Shared fixtures: offline hub, small thread count, tiny data and a tiny FM checkpoint built in the test."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("PAPER_REPRO_CACHE", os.path.join(os.path.dirname(__file__), "..", "build", "test-cache"))
os.environ.setdefault("PAPER_REPRO_RESULTS", os.path.join(os.path.dirname(__file__), "..", "build", "test-results"))
# tests never read or write the committed run ledger unless they name it
os.environ.setdefault("PAPER_REPRO_LEDGER", os.path.join(os.path.dirname(__file__), "..", "build", "test-ledger"))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from paper_repro.data import ImageSet, make_synthetic_blobs  # noqa: E402


@pytest.fixture(scope="session")
def blobs():
    return make_synthetic_blobs(n_train=600, n_test=200)


@pytest.fixture
def tiny_set():
    x = np.arange(6 * 1 * 4 * 4, dtype=np.uint8).reshape(6, 1, 4, 4)
    return ImageSet(x, np.array([0, 1, 1, 2, 2, 2]), ("a", "b", "c"))


@pytest.fixture(scope="session")
def tiny_fm_dir(tmp_path_factory, blobs):
    """A tiny class-conditional DDPM trained for 3 steps on the smoke set's public split (random quality)."""
    from paper_repro.data import load_dataset, split_public
    from paper_repro.fm import ClassConditionalDDPM, DDPMTrainConfig
    from paper_repro.profiles import load_config

    cfg = load_config("smoke")
    train, test = load_dataset("synthetic_blobs")
    public = split_public(train, test, cfg.data.public_size, cfg.data.client_size, seed=cfg.data.split_seed).public
    fm = ClassConditionalDDPM.train(
        public, DDPMTrainConfig(block_out_channels=(8, 16), steps=3, batch_size=8), progress=False
    )
    return fm.save(tmp_path_factory.mktemp("fm") / "tiny_ddpm", command="tests/conftest.py")


TIERS = ("unit", "smoke", "notebooks", "claims", "browser", "slow")
# a test without a tier marker gets its file's tier
FILE_TIERS = {
    "test_runner": "smoke",
    "test_faults": "smoke",
    "test_analysis": "smoke",
    "test_notebooks": "notebooks",
    "test_claims": "claims",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, FILE_TIERS.get(Path(item.fspath).stem, "unit")))
