"""Exact one-step alignment of a query with a few candidate rows: re-ranks a projected search's best.

Why: the projection that lets TrackStar search millions of rows blurs the order among its best hundred,
whose projected scores differ by less than the projection's noise. Measured on three saved benchmark
models (docs/quality_results.md, session 19), TrackStar's projected cosine (d = 16384, no R) ranked its
top-100 rows by the one-step effect each has on the query (tail-patch) with Spearman 0.19-0.36 (0.42-0.62
at d = 65536); the same cosine on exact gradients 0.67-0.79.

What the step does: one optimizer step on row m moves the query's log-probability by about
lr * g_q . V^{-1/2} g_m, since Adam and Adafactor step along the V^{-1/2}-scaled gradient (clipping
rescales the step, not its direction). So the alignment here is cos(g_q, V^{-1/2} g_m): the query's
raw gradient against the row's optimizer-corrected one, exact (projection_dim 0) over the hooked
modules, with no curvature R (it lives in the projected space). On those models it ranked the top 100
with Spearman 0.89-0.90, against 0.67-0.79 with V^{-1/2} on both sides, as TrackStar scores. LESS
(Xia et al., 2024) scores training data by the optimizer's update in the same way.

Memory: only a chunk of queries and a chunk of candidates hold exact gradients at once, sized by
`budget_bytes`; it grows with the model's hooked weight count, never with the corpus.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping, Sequence

from torch import nn

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import collect_gradients, gradient_dim
from trackstar_pipeline.attribution.optimizer_state import SecondMoments
from trackstar_pipeline.settings import AttributionSettings

Alignments = dict[str, dict[str, float]]
"""query id -> {corpus id: cos(g_q, V^{-1/2} g_m)}."""


class RerankMemoryError(ValueError):
    """The model's exact gradients do not fit the re-rank's memory budget."""


def exact_gradient_bytes(model: nn.Module, settings: AttributionSettings) -> int:
    """Bytes of one example's exact float32 gradient over the hooked modules."""
    return 4 * gradient_dim(model, replace(settings, projection_dim=0))


MIN_ROWS = 3
"""Exact gradients the budget must hold: a query's, a candidate's, and the backward's own batch of one."""


def chunk_sizes(row_bytes: int, budget_bytes: int, batch_size: int, n_queries: int) -> tuple[int, int]:
    """(queries, candidates) held at once within the budget. Candidates come in batches of batch_size or
    fewer, and a backward's batch of that size is held beside them, so they take two shares; the rest go
    to queries, since each query chunk computes its candidates' gradients again."""
    rows = budget_bytes // max(row_bytes, 1)
    if rows < MIN_ROWS:
        raise RerankMemoryError(
            f"exact re-rank: one example's exact gradient takes {row_bytes / 2**20:.0f} MiB and the budget "
            f"{budget_bytes / 2**20:.0f} MiB holds fewer than {MIN_ROWS}; raise evaluation.rerank_memory_mb or turn "
            "the re-rank off (evaluation.fusion_rerank: 0)")
    candidates = max(1, min(batch_size, rows // 4))
    return max(1, min(n_queries, rows - 2 * candidates)), candidates


def update_alignments(
    model: nn.Module,
    queries: Mapping[str, TokenizedExample],
    pools: Mapping[str, Sequence[str]],
    examples: Callable[[Sequence[str]], Sequence[TokenizedExample]],
    settings: AttributionSettings,
    second_moments: SecondMoments | None,
    budget_bytes: int,
    progress: Callable[[int, int], None] | None = None,
) -> Alignments:
    """cos(g_q, V^{-1/2} g_m) for every (query, candidate) pair in `pools` (query id -> candidate ids).

    examples: candidate ids -> their tokenized rows (any order; one call per candidate chunk).
    second_moments None (or optimizer_correction 'none'): both sides raw, the step of plain SGD.
    progress: (pairs done, pairs) after each candidate batch.
    """
    missing = [query_id for query_id in pools if query_id not in queries]
    if missing:
        raise KeyError(f"exact re-rank: no tokenized query for {missing[:3]} ({len(missing)} in all)")
    query_ids = [query_id for query_id, pool in pools.items() if pool]
    per_query, per_candidate = chunk_sizes(exact_gradient_bytes(model, settings), budget_bytes,
                                           settings.batch_size, len(query_ids))
    exact = replace(settings, projection_dim=0, batch_size=per_candidate)  # a backward holds per_candidate rows
    result: Alignments = {query_id: {} for query_id in pools}
    n_pairs, done = sum(len(set(pools[q])) for q in query_ids), 0
    for start in range(0, len(query_ids), per_query):
        chunk = query_ids[start:start + per_query]
        raw = collect_gradients(model, [queries[q] for q in chunk], exact, None)  # (Qc, D): the query's own gradient
        query_vectors = raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-30)  # (Qc, D)
        del raw
        askers: dict[str, list[int]] = {}  # candidate id -> rows of query_vectors whose pool holds it
        for row, query_id in enumerate(chunk):
            for corpus_id in dict.fromkeys(pools[query_id]):
                askers.setdefault(corpus_id, []).append(row)
        candidate_ids = list(askers)
        for begin in range(0, len(candidate_ids), per_candidate):
            batch = candidate_ids[begin:begin + per_candidate]
            found = {example.example_id: example for example in examples(batch)}
            absent = [corpus_id for corpus_id in batch if corpus_id not in found]
            if absent:
                raise KeyError(f"exact re-rank: candidate rows {absent[:3]} are not in the corpus")
            corrected = collect_gradients(model, [found[c] for c in batch], exact, second_moments)  # (C, D)
            corrected = corrected / corrected.norm(dim=1, keepdim=True).clamp_min(1e-30)  # (C, D)
            for position, corpus_id in enumerate(batch):
                rows = askers[corpus_id]
                cosines = query_vectors[rows] @ corrected[position]  # (len(rows),)
                for row, cosine in zip(rows, cosines.tolist()):
                    result[chunk[row]][corpus_id] = cosine
                done += len(rows)
            if progress is not None:
                progress(done, n_pairs)
    return result


def reranked(ranking: Sequence[tuple[str, float]], alignments: Mapping[str, float], pool: int,
             ) -> list[tuple[str, float]]:
    """A ranking's first `pool` rows in descending alignment (ties keep the ranking's order), scored by it;
    the rows after them keep their order, scored below every cosine (-2 and down)."""
    head = [corpus_id for corpus_id, _ in ranking[:pool]]
    order = sorted(range(len(head)), key=lambda i: -alignments[head[i]])  # stable: ties keep the projected order
    tail = [(corpus_id, -2.0 - i) for i, (corpus_id, _) in enumerate(ranking[pool:])]
    return [(head[i], float(alignments[head[i]])) for i in order] + tail
