"""TrackStar scores: cosine of R^{-1/2}-whitened gradients, and exact top-k streamed over blocks."""

from __future__ import annotations

from typing import Iterable, Sequence

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


def top_k_proponents(query_vectors: torch.Tensor, train_blocks: Iterable[tuple[Sequence[str], torch.Tensor]],
                     k: int) -> list[list[tuple[str, float]]]:
    """Exact top-k training examples per query by dot product, holding one block at a time."""
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    queries = query_vectors.float()  # (Q, d)
    best_scores = torch.empty((queries.shape[0], 0))  # (Q, <=k)
    best_ids: list[list[str]] = [[] for _ in range(queries.shape[0])]
    for ids, block in train_blocks:
        if len(ids) != block.shape[0]:
            raise ValueError(f"a training block has {len(ids)} ids but {block.shape[0]} vectors")
        scores = queries @ block.float().to(queries.device).T  # (Q, b)
        merged = torch.cat([best_scores, scores], dim=1)  # (Q, <=k + b)
        best_scores, positions = merged.topk(min(k, merged.shape[1]), dim=1)  # (Q, <=k)
        kept = best_ids
        best_ids = [[(kept[q][p] if p < len(kept[q]) else ids[p - len(kept[q])]) for p in row]
                    for q, row in enumerate(positions.tolist())]
    return [[(example_id, float(score)) for example_id, score in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(best_ids, best_scores.tolist())]
