"""A method whose best rows are re-ordered by an exact score: the fusion's TrackStar, re-ranked.

The base method finds the rows (its projected search over the whole corpus, or its scores of a closed
set's candidates); `align` re-orders its best `pool` of them (attribution/exact_rerank.py). Alignments
are cached per (query, row), so the closed set reuses the open set's and each pair is computed once.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from trackstar_pipeline.attribution.exact_rerank import Alignments, reranked
from trackstar_pipeline.evaluation.scorers import MethodScorer, Ranking

Align = Callable[[Mapping[str, Sequence[str]]], Alignments]
"""query id -> candidate ids  =>  query id -> {candidate id: alignment} (update_alignments, bound)."""


def checked_rerank(pool: int, memory_mb: int) -> None:
    """evaluation.fusion_rerank and rerank_memory_mb, checked before any corpus pass."""
    if pool < 0:
        raise ValueError(f"evaluation.fusion_rerank {pool} is negative; give the rows to re-rank, or 0 for none")
    if memory_mb <= 0:
        raise ValueError(f"evaluation.rerank_memory_mb {memory_mb} must be positive (MiB for the exact gradients)")


class ExactRerankScorer:
    """`base`'s ranking with its first `pool` rows ordered by `align`."""

    def __init__(self, base: MethodScorer, pool: int, align: Align) -> None:
        if pool < 1:
            raise ValueError(f"exact re-rank: pool {pool} must be at least 1 (0 turns the re-rank off upstream)")
        self.base = base
        self.pool = pool
        self.query_ids = list(base.query_ids)
        self._align = align
        self._known: dict[str, dict[str, float]] = {query_id: {} for query_id in self.query_ids}

    def _aligned(self, wanted: Mapping[str, Sequence[str]]) -> None:
        """Compute the pairs not yet known, all queries in one call."""
        missing = {query_id: [c for c in dict.fromkeys(ids) if c not in self._known.setdefault(query_id, {})]
                   for query_id, ids in wanted.items()}
        missing = {query_id: ids for query_id, ids in missing.items() if ids}
        if missing:
            for query_id, found in self._align(missing).items():
                self._known[query_id].update(found)

    def top_k(self, k: int) -> dict[str, Ranking]:
        tops = self.base.top_k(max(k, self.pool))
        self._aligned({query_id: [c for c, _ in tops[query_id][:self.pool]] for query_id in self.query_ids})
        return {query_id: reranked(tops[query_id], self._known[query_id], self.pool)[:k]
                for query_id in self.query_ids}

    def _base_ranking(self, query_id: str, candidate_ids: Sequence[str]) -> Ranking:
        """The base method's scores of a closed set's candidates, best first (ties in candidate order)."""
        scores = np.asarray(self.base.score_candidates(query_id, candidate_ids), dtype=np.float64)  # (C,)
        return [(candidate_ids[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]

    def prefetch_candidates(self, candidates: Mapping[str, Sequence[str]]) -> None:
        prefetch = getattr(self.base, "prefetch_candidates", None)
        if prefetch is not None:
            prefetch(candidates)
        self._aligned({query_id: [c for c, _ in self._base_ranking(query_id, ids)[:self.pool]]
                       for query_id, ids in candidates.items()})

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """Closed set: the base's best `pool` candidates by alignment, the others below them in the base's order
        (reranked, as the open set)."""
        ranking = self._base_ranking(query_id, candidate_ids)
        self._aligned({query_id: [c for c, _ in ranking[:self.pool]]})
        scored = dict(reranked(ranking, self._known[query_id], self.pool))
        return np.array([scored[c] for c in candidate_ids], dtype=np.float64)
