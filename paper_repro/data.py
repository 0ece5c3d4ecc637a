"""Image data: the frozen ``ImageSet``, offline loaders (Fashion-MNIST, CIFAR-10, a synthetic smoke set) and the
server/client split."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .rng import np_rng

if TYPE_CHECKING:
    import torch

from .store import REPO_ROOT  # noqa: F401  (re-exported: data paths are relative to it)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataNotFoundError(FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded; the message says how to supply it."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images ``x`` uint8 (N, C, H, W) and labels ``y`` int64 (N,), read-only; ``classes`` names the labels.

    Operations return new sets; the arrays are flagged read-only so that in-place poisoning fails loudly
    (docs/paper.md, traps).
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.x, dtype=np.uint8)
        y = np.ascontiguousarray(self.y, dtype=np.int64)
        if x.ndim != 4:
            raise ValueError(f"ImageSet.x must be (N, C, H, W), got shape {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"ImageSet.y must be ({x.shape[0]},), got {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in 0..{len(self.classes) - 1}")
        if x is self.x:
            x = x.copy()
        if y is self.y:
            y = y.copy()
        x.setflags(write=False)
        y.setflags(write=False)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # (C, H, W)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.x[idx], self.y[idx], self.classes)

    def with_arrays(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> "ImageSet":
        return ImageSet(self.x if x is None else x, self.y if y is None else y, self.classes)

    def counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.num_classes)

    def digest(self) -> str:
        """Content hash (images, labels, class names): part of every cache key built on this set."""
        h = hashlib.sha256()
        h.update(self.x.tobytes())
        h.update(self.y.tobytes())
        h.update("|".join(self.classes).encode())
        return h.hexdigest()[:16]

    def tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images (x/255 − 0.5)/0.5 and labels. [C: author code Normalize(0.5, 0.5)]"""
        import torch

        return to_float(self.x, device), torch.tensor(self.y, device=device)

    @staticmethod
    def concat(sets: list["ImageSet"]) -> "ImageSet":
        return ImageSet(np.concatenate([s.x for s in sets]), np.concatenate([s.y for s in sets]), sets[0].classes)


def to_float(x: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 in [−1, 1]."""
    import torch

    t = torch.tensor(np.asarray(x), device=device)  # copy: inputs are read-only
    return t.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float in [−1, 1] → uint8 (rounded, clipped)."""
    import torch

    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------------- loaders


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def _fashion_dirs(root: str | os.PathLike | None) -> list[Path]:
    dirs = []
    for d in (root, os.environ.get("PAPER_REPRO_DATA")):
        if d:
            dirs += [Path(d), Path(d) / "fashion-mnist", Path(d) / "FashionMNIST" / "raw"]
    return dirs + [DEBIAN_FASHION_MNIST]


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> tuple[ImageSet, ImageSet]:
    """(train 60k, test 10k) Fashion-MNIST, 1×28×28.

    Looks in ``root``, then ``$PAPER_REPRO_DATA`` (also its ``fashion-mnist/`` or ``FashionMNIST/raw/``), then
    the Debian package's ``/usr/share/datasets/fashion-mnist``; falls back to torchvision's downloader.
    """
    names = {
        "xtr": "train-images-idx3-ubyte",
        "ytr": "train-labels-idx1-ubyte",
        "xte": "t10k-images-idx3-ubyte",
        "yte": "t10k-labels-idx1-ubyte",
    }
    for d in _fashion_dirs(root):
        files = {k: d / f"{v}.gz" for k, v in names.items()}
        if all(p.exists() for p in files.values()):
            xtr = _read_idx(files["xtr"], 16).reshape(-1, 1, 28, 28)
            xte = _read_idx(files["xte"], 16).reshape(-1, 1, 28, 28)
            return (
                ImageSet(xtr, _read_idx(files["ytr"], 8), FASHION_MNIST_CLASSES),
                ImageSet(xte, _read_idx(files["yte"], 8), FASHION_MNIST_CLASSES),
            )
    hint = (
        "Fashion-MNIST not found. Install it with `apt-get install dataset-fashion-mnist` (as root), or put the "
        "four *-ubyte.gz files in a folder and set PAPER_REPRO_DATA=<folder>."
    )
    if not download:
        raise DataNotFoundError(hint)
    try:
        from torchvision.datasets import FashionMNIST

        dl_root = Path(os.environ.get("PAPER_REPRO_DATA", REPO_ROOT / "data" / "cache"))
        tr, te = FashionMNIST(dl_root, train=True, download=True), FashionMNIST(dl_root, train=False, download=True)
    except Exception as e:  # no internet here: say what to do instead
        raise DataNotFoundError(f"{hint} (torchvision download failed: {type(e).__name__}: {e})") from None
    return (
        ImageSet(tr.data.numpy()[:, None], tr.targets.numpy(), FASHION_MNIST_CLASSES),
        ImageSet(te.data.numpy()[:, None], te.targets.numpy(), FASHION_MNIST_CLASSES),
    )


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> tuple[ImageSet, ImageSet]:
    """(train 50k, test 10k) CIFAR-10, 3×32×32, through torchvision (``root`` or ``$PAPER_REPRO_DATA``)."""
    from torchvision.datasets import CIFAR10

    dl_root = Path(root or os.environ.get("PAPER_REPRO_DATA", REPO_ROOT / "data" / "cache"))
    try:
        tr = CIFAR10(dl_root, train=True, download=download)
        te = CIFAR10(dl_root, train=False, download=download)
    except Exception as e:
        raise DataNotFoundError(
            f"CIFAR-10 is not in {dl_root} and could not be downloaded ({type(e).__name__}: {e}). Without internet, "
            "copy the extracted `cifar-10-batches-py/` folder into a directory and set PAPER_REPRO_DATA to it."
        ) from None
    to_chw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731  HWC → CHW
    return (
        ImageSet(to_chw(tr.data), np.array(tr.targets), CIFAR10_CLASSES),
        ImageSet(to_chw(te.data), np.array(te.targets), CIFAR10_CLASSES),
    )


def make_synthetic_blobs(
    n_train: int = 1200, n_test: int = 300, size: int = 12, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """A tiny procedurally generated 10-class set for smoke tests: class c is a bright bar at a class-specific
    position/orientation on a noisy dark background. Learnable in seconds; no files needed."""
    rng = np_rng(seed, "synthetic_blobs")

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 10
        x = rng.normal(40, 20, size=(n, 1, size, size))
        for c in range(10):
            m = y == c
            pos = 1 + (c % 5) * (size - 3) // 5
            if c < 5:
                x[m, 0, pos : pos + 2, 1 : size - 4] += 170
            else:
                x[m, 0, 1 : size - 4, pos : pos + 2] += 170
        return np.clip(x, 0, 255).astype(np.uint8), y

    names = tuple(f"blob{c}" for c in range(10))
    return ImageSet(*draw(n_train), names), ImageSet(*draw(n_test), names)


def load_dataset(name: str) -> tuple[ImageSet, ImageSet]:
    """(train, test) of a dataset named in ``config.DATASETS``."""
    if name == "fashion_mnist":
        return load_fashion_mnist()
    if name == "cifar10":
        return load_cifar10()
    if name == "synthetic_blobs":
        return make_synthetic_blobs(seed=0)  # fixed: the data set does not change with the run's seed
    raise ValueError(f"unknown dataset {name!r}")


@dataclass(frozen=True, eq=False)
class Splits:
    """The server's public split (for the FM only), the pool shared among clients, and the clean test set."""

    public: ImageSet
    clients: ImageSet
    test: ImageSet


def split_public(
    train: ImageSet, test: ImageSet, public_size: int, client_size: int = 0, test_size: int = 0, seed: int = 0
) -> Splits:
    """Disjoint public / client pools drawn by a seeded permutation of ``train``; optional test subset."""
    n = len(train)
    client_size = client_size or n - public_size
    if public_size + client_size > n:
        raise ValueError(f"public_size + client_size = {public_size + client_size} exceeds the {n} training images")
    perm = np_rng(seed, "public_split").permutation(n)
    test_idx = np.arange(len(test))
    if test_size and test_size < len(test):
        test_idx = np.sort(np_rng(seed, "test_subset").permutation(len(test))[:test_size])
    return Splits(
        train.subset(np.sort(perm[:public_size])),
        train.subset(np.sort(perm[public_size : public_size + client_size])),
        test.subset(test_idx),
    )


def public_splits(cfg) -> Splits:
    """A config's dataset split into the server's public split (the FM's training data), the client pool and the
    test set, by ``cfg.data.split_seed`` (independent of the run seed, so the FM never saw a client's image)."""
    d = cfg.data
    train, test = load_dataset(d.dataset)
    return split_public(train, test, d.public_size, d.client_size, d.test_size, seed=d.split_seed)
