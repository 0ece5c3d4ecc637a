"""Client partitions as pure functions: labels + a numpy Generator → one index array per client."""

from __future__ import annotations

import numpy as np


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Equal-size random split (sizes differ by at most one)."""
    _check_clients(len(labels), num_clients, 1)
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    beta: float,
    rng: np.random.Generator,
    min_size: int = 10,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Per class c, split its samples over clients with proportions p_c ~ Dir(β·1); redraw until every client
    holds at least ``min_size`` samples. [C: Hsu et al. 2019; used by 2401.10375 with β = 0.1]"""
    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0")
    _check_clients(len(labels), num_clients, min_size)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, beta)))[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise RuntimeError(
        f"dirichlet: no split with min_size={min_size} in {max_tries} draws; lower min_size or raise beta={beta}"
    )


def shards(labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sort by label, cut into ``num_clients·shards_per_client`` equal shards, deal them out at random.
    [C: McMahan et al. 2017]"""
    n_shards = num_clients * shards_per_client
    _check_clients(len(labels), n_shards, 1)
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in deal]


def make_partition(
    labels: np.ndarray,
    num_clients: int,
    kind: str,
    rng: np.random.Generator,
    beta: float = 0.5,
    min_size: int = 10,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Dispatch on ``kind`` ∈ {iid, dirichlet, shards}."""
    if kind == "iid":
        return iid(labels, num_clients, rng)
    if kind == "dirichlet":
        return dirichlet(labels, num_clients, beta, rng, min_size=min_size)
    if kind == "shards":
        return shards(labels, num_clients, shards_per_client, rng)
    raise ValueError(f"unknown partition {kind!r}; choose iid, dirichlet or shards")


def _check_clients(n: int, num_clients: int, min_size: int) -> None:
    if num_clients < 1:
        raise ValueError("num_clients must be >= 1")
    if n < num_clients * min_size:
        raise ValueError(f"{n} samples cannot give {num_clients} clients at least {min_size} each")
