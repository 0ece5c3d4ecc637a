"""Named random streams derived from one seed, so each purpose (partition, poisoning, client k at round t) is
independent of the others and of the order in which they are asked for. No global RNG is touched."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, *purpose: object) -> int:
    """A 63-bit seed from the run seed and a purpose path, e.g. ``derive_seed(0, "client", 3, "round", 7)``."""
    key = "/".join([str(seed), *map(str, purpose)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def np_rng(seed: int, *purpose: object) -> np.random.Generator:
    """A numpy Generator for one purpose."""
    return np.random.default_rng(derive_seed(seed, *purpose))


def torch_gen(seed: int, *purpose: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator for one purpose."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *purpose))
    return g


def legacy_rng(*entropy: int) -> np.random.Generator:
    """A numpy Generator seeded directly by ``entropy`` (numpy's SeedSequence), for two streams defined before
    :func:`derive_seed` existed: the classic attack's choice of poisoned local samples, ``(seed, client, 7)``, and
    MM-BM's fitting images, ``(round,)``. Kept so that the committed numbers stay valid; new code uses
    :func:`np_rng`."""
    return np.random.default_rng(list(entropy))
