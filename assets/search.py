"""Top-k search of the LanceDB gradient table (shared by the proponents asset and `trackstar query`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def search_table(table: Any, query_vectors: np.ndarray, k: int, exact: bool = True) -> list[list[dict[str, Any]]]:
    """Per query, the k rows with the largest dot product: [{"id", "score", "text"}, ...] in descending score.

    LanceDB's "dot" distance is 1 - q.x, so score = 1 - _distance. exact=True bypasses the ANN index.
    """
    results = []
    for vector in np.asarray(query_vectors, dtype=np.float32):  # (d,)
        search = table.search(vector).metric("dot").select(["example_id", "text"]).limit(k)
        if exact:
            search = search.bypass_vector_index()
        hits = search.to_arrow()
        results.append([
            {"id": i, "score": 1.0 - float(d), "text": t}
            for i, t, d in zip(hits["example_id"].to_pylist(), hits["text"].to_pylist(), hits["_distance"].to_pylist())
        ])
    return results
