"""Top-k search of the LanceDB gradient table (shared by the proponents asset and `trackstar query`)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def search_table(table: Any, query_vectors: np.ndarray, k: int, exact: bool = True) -> list[list[dict[str, Any]]]:
    """Per query, the k rows with the largest dot product: [{"id", "score", "text"}, ...] in descending score.

    LanceDB's "dot" distance is 1 - q.x, so score = 1 - _distance. exact=True bypasses the ANN index.
    """
    results = []
    for vector in np.asarray(query_vectors, dtype=np.float32):  # (d,)
        search = table.search(vector).metric("dot").select(["example_id", "text", "_distance"]).limit(k)
        if exact:
            search = search.bypass_vector_index()
        hits = search.to_arrow()
        results.append([
            {"id": i, "score": 1.0 - float(d), "text": t}
            for i, t, d in zip(hits["example_id"].to_pylist(), hits["text"].to_pylist(), hits["_distance"].to_pylist())
        ])
    return results


class TableVectors:
    """Every row of the gradient table in memory, to score a closed candidate set for a query."""

    def __init__(self, table: Any) -> None:
        data = table.search().select(["example_id", "vector"]).limit(None).to_arrow()
        self.index = {example_id: row for row, example_id in enumerate(data["example_id"].to_pylist())}
        flat = np.asarray(data["vector"].combine_chunks().flatten(), dtype=np.float32)
        self.vectors = flat.reshape(len(self.index), -1)  # (N, d)

    def scores(self, query_vector: np.ndarray, candidate_ids: Sequence[str]) -> np.ndarray:
        """Dot products of one query vector (d,) with the named rows, in the given order."""
        missing = [i for i in candidate_ids if i not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} candidate ids are not in the gradient table, e.g. {missing[:3]}; "
                           "materialize gradient_table for every shard")
        return self.vectors[[self.index[i] for i in candidate_ids]] @ query_vector  # (C,)
