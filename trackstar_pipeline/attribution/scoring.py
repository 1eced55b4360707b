"""TrackStar scores: cosine of R^{-1/2}-whitened gradients, and exact top-k streamed over blocks."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from trackstar_pipeline.attribution.curvature import CurvatureMatrix, whiten


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
    best_scores = torch.empty((queries.shape[0], 0), device=queries.device)  # (Q, <=k)
    best_positions = torch.empty((queries.shape[0], 0), dtype=torch.long, device=queries.device)  # (Q, <=k)
    best_ids = np.empty((queries.shape[0], 0), dtype=object)  # (Q, <=k)
    offset = 0
    for ids, block in train_blocks:
        if len(ids) != block.shape[0]:
            raise ValueError(f"a training block has {len(ids)} ids but {block.shape[0]} vectors")
        if block.shape[0] == 0:
            continue
        scores = queries @ block.to(queries.device).float().T  # (Q, b)
        block_scores, block_positions = scores.topk(min(k, scores.shape[1]), dim=1)  # (Q, <=k)
        merged = torch.cat([best_scores, block_scores], dim=1)  # (Q, <=2k)
        positions = torch.cat([best_positions, block_positions + offset], dim=1)  # (Q, <=2k), unique per row
        by_position = positions.argsort(dim=1)  # (Q, <=2k)
        by_score = merged.gather(1, by_position).argsort(dim=1, descending=True, stable=True)[:, :k]  # (Q, <=k)
        order = by_position.gather(1, by_score)  # (Q, <=k): score descending, then stream position
        best_scores, best_positions = merged.gather(1, order), positions.gather(1, order)
        candidates = np.concatenate([best_ids, _ids_at(ids, block_positions.cpu().numpy())], axis=1)  # (Q, <=2k)
        best_ids = np.take_along_axis(candidates, order.cpu().numpy(), axis=1)  # (Q, <=k)
        offset += block.shape[0]
    return [[(str(example_id), float(score)) for example_id, score in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(best_ids.tolist(), best_scores.cpu().tolist())]
