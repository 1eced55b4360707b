"""TrackStar scores: cosine of R^{-1/2}-whitened gradients, and exact top-k streamed over blocks."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from trackstar_pipeline.attribution.curvature import CurvatureMatrix, whiten
from trackstar_pipeline.attribution.running_top_k import RunningTopK


def prepare_vectors(vectors: torch.Tensor, inverse_sqrt: CurvatureMatrix | None, unit_normalize: bool) -> torch.Tensor:
    """R^{-1/2} g (R^{-1/2} is symmetric, dense or block-diagonal), then unit norm: the vectors whose dot product is the score."""
    prepared = vectors.float()  # (N, d)
    if inverse_sqrt is not None:
        prepared = whiten(prepared, inverse_sqrt)  # (N, d)
    if unit_normalize:
        prepared = prepared / prepared.norm(dim=1, keepdim=True).clamp_min(1e-30)  # (N, d)
    return prepared


def _ids_at(ids: Sequence[str] | np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The ids at the given (Q, k) positions of one block, as an object array (only those strings are built)."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        taken = ids.take(pa.array(positions.ravel()))  # (Q * k,)
        return np.asarray(taken.to_numpy(zero_copy_only=False), dtype=object).reshape(positions.shape)
    return np.asarray(ids, dtype=object)[positions]  # (Q, k)


def top_k_proponents(query_vectors: torch.Tensor, train_blocks: Iterable[tuple[Sequence[str], torch.Tensor]],
                     k: int) -> list[list[tuple[str, float]]]:
    """Exact top-k training examples per query by dot product, holding one block at a time.

    Blocks are scored on the queries' device; ids may be a list or an Arrow string array (the table's batches).
    The merge is vectorised: per block only the (Q, k) winners' ids are looked up. Equal scores (duplicate
    rows) are ordered by stream position, so one query gets the same order alone or in a batch of queries.
    """
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    queries = query_vectors.float()  # (Q, d)
    best = RunningTopK(queries.shape[0], k)
    for ids, block in train_blocks:
        if len(ids) != block.shape[0]:
            raise ValueError(f"a training block has {len(ids)} ids but {block.shape[0]} vectors")
        if block.shape[0] == 0:
            continue
        scores = queries @ block.to(queries.device).float().T  # (Q, b)
        block_scores, block_positions = scores.topk(min(k, scores.shape[1]), dim=1)  # (Q, <=k)
        positions = block_positions.cpu().numpy()  # (Q, <=k)
        best.merge(block_scores.cpu().numpy(), positions, _ids_at(ids, positions), block.shape[0])
    return best.rankings()
