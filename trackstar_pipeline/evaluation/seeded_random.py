"""Uniform pseudo-random numbers keyed by (seed, label, query id, corpus id), computed a block at a time.

The random baseline and the closed set's random candidates must not depend on the corpus order,
on how it is cut into shards, or on which other queries are evaluated: each number is a hash of
its own keys, mixed with splitmix64 in vectorised uint64 arithmetic.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from trackstar_pipeline.attribution.projection import stable_seed

_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """(n,) uint64: a stable 64-bit key per id (not Python's randomised hash)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                        for i in ids), dtype=np.uint64, count=len(ids))


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (uint64 arithmetic wraps, as the algorithm intends)."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def seeded_uniform(seed: int, label: str, query_ids: Sequence[str], corpus_keys: np.ndarray) -> np.ndarray:
    """(Q, n) float64 in [0, 1): one number per (seed, label, query id, corpus key)."""
    query_keys = np.array([stable_seed(seed, f"{label}:{query_id}") for query_id in query_ids], dtype=np.uint64)
    mixed = _splitmix64(query_keys[:, None] ^ corpus_keys[None, :])  # (Q, n)
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # (Q, n)


def random_scores(seed: int, query_ids: Sequence[str], corpus_keys: np.ndarray) -> np.ndarray:
    """(Q, n) the random baseline's scores: uniform per (seed, query id, corpus id), whatever the order or sharding."""
    return seeded_uniform(seed, "random", query_ids, corpus_keys)
