"""A running top-k per query over score blocks, so ranking a corpus never holds more than one block of scores.

Ties are broken by corpus position (earlier row first), the same rule as a stable sort of the
whole score row, so the result does not depend on how the corpus was cut into blocks or shards.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Ranking = list[tuple[str, float]]


def stable_top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, min(k, b)) column indices of each row's k largest scores; on ties the earlier column wins."""
    n_rows, width = scores.shape
    if k >= width:
        return np.broadcast_to(np.arange(width), (n_rows, width))
    threshold = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]  # (Q, 1) the k-th largest score
    above = scores > threshold  # (Q, b)
    tied = scores == threshold  # (Q, b)
    room = k - above.sum(axis=1, keepdims=True)  # (Q, 1) tied slots left per row
    keep = above | (tied & (np.cumsum(tied, axis=1) <= room))  # (Q, b), exactly k per row
    return np.nonzero(keep)[1].reshape(n_rows, k)  # (Q, k), ascending column


class RunningTopK:
    """The k best (id, score) per query seen so far, merged block by block (score descending, then position)."""

    def __init__(self, n_queries: int, k: int) -> None:
        if k <= 0:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        self.k = k
        self.scores = np.empty((n_queries, 0), dtype=np.float64)  # (Q, <=k)
        self.positions = np.empty((n_queries, 0), dtype=np.int64)  # (Q, <=k) global corpus positions
        self.ids = np.empty((n_queries, 0), dtype=object)  # (Q, <=k)
        self.seen = 0

    def update(self, scores: np.ndarray, ids: np.ndarray | Sequence[str]) -> None:
        """Merge one block: scores (Q, b) for the next b corpus rows, ids (b,) in the same order."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[1] != len(ids):
            raise ValueError(f"a score block has {scores.shape[1]} columns but {len(ids)} ids")
        if np.isnan(scores).any():
            raise ValueError("a method produced NaN scores; fix the scorer before ranking")
        columns = stable_top_indices(scores, self.k)  # (Q, k')
        ids = ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=object)
        self.merge(np.take_along_axis(scores, columns, axis=1), columns, ids[columns], scores.shape[1])

    def merge(self, scores: np.ndarray, columns: np.ndarray, ids: np.ndarray, block_width: int) -> None:
        """Merge candidates already picked from the next block of `block_width` rows: (Q, c) scores, their
        columns in that block and their ids. For callers that select on their own device (the table search's
        torch topk); the kept order is the same rule, score descending then corpus position."""
        merged_scores = np.concatenate([self.scores, np.asarray(scores, dtype=np.float64)], axis=1)  # (Q, <=k+c)
        merged_positions = np.concatenate([self.positions, self.seen + columns], axis=1)  # (Q, <=k+c)
        merged_ids = np.concatenate([self.ids, ids], axis=1)  # (Q, <=k+c)
        order = np.lexsort((merged_positions, -merged_scores), axis=1)[:, :self.k]  # (Q, <=k)
        self.scores = np.take_along_axis(merged_scores, order, axis=1)
        self.positions = np.take_along_axis(merged_positions, order, axis=1)
        self.ids = np.take_along_axis(merged_ids, order, axis=1)
        self.seen += block_width

    def rankings(self) -> list[Ranking]:
        """Per query, [(id, score)] best first."""
        return [[(str(i), float(s)) for i, s in zip(row_ids, row_scores)]
                for row_ids, row_scores in zip(self.ids.tolist(), self.scores.tolist())]
