"""Closed-set evaluation (FTRACE): rank a small per-query candidate set instead of the corpus.

Per query the candidates are its ground-truth proponents, the BM25 top n, n examples with the
same completion (hard negatives that mention the answer) and n random ones. Every method ranks
the same candidates with its own scores, so the comparison isolates ranking quality from recall.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import polars as pl

from trackstar_pipeline.attribution.projection import stable_seed
from trackstar_pipeline.evaluation.scorers import MethodScorer, Ranking


def _facts_by_object(corpus: pl.DataFrame) -> dict[str, list[str]]:
    """Object entity -> corpus ids whose facts have it (corpus order)."""
    index: dict[str, list[str]] = {}
    if "facts" not in corpus.columns:
        return index
    for corpus_id, facts in zip(corpus["id"].to_list(), corpus["facts"].to_list()):
        for obj in {fact[2] for fact in (facts or []) if fact is not None and len(fact) == 3}:
            index.setdefault(obj, []).append(corpus_id)
    return index


def _same_completion_pool(query: Mapping, by_object: Mapping[str, list[str]],
                          corpus_ids: Sequence[str], corpus_texts: Sequence[str]) -> list[str]:
    """Corpus ids sharing the query's answer: by fact object when known, else by completion text."""
    fact = query.get("fact")
    if fact is not None and len(fact) == 3 and fact[2] in by_object:
        return by_object[fact[2]]
    needle = str(query["completion"]).strip()
    return [corpus_id for corpus_id, text in zip(corpus_ids, corpus_texts) if needle and needle in text]


def _sample(pool: Sequence[str], n: int, excluded: set[str], rng: np.random.Generator) -> list[str]:
    """Up to n ids from pool (order kept as drawn), none of them in `excluded`."""
    available = [corpus_id for corpus_id in pool if corpus_id not in excluded]
    if len(available) <= n:
        return available
    return [available[i] for i in rng.choice(len(available), size=n, replace=False)]


def build_candidate_sets(
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    ground_truth: Mapping[str, Sequence[str]],
    bm25_top: Mapping[str, Ranking],
    n_bm25: int = 100,
    n_same_completion: int = 100,
    n_random: int = 100,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Query id -> candidates: ground truth, BM25 top n, n same-completion, n random (no repeats).

    `bm25_top` must hold at least n_bm25 ranked ids per query. Sampling is seeded per query id,
    so a query's set does not depend on which other queries are evaluated.
    """
    corpus_ids = corpus["id"].to_list()
    corpus_texts = corpus["text"].to_list()
    by_object = _facts_by_object(corpus)
    candidates: dict[str, list[str]] = {}
    for query in queries.iter_rows(named=True):
        query_id = query["id"]
        rng = np.random.default_rng(stable_seed(seed, f"closed_set:{query_id}"))
        chosen: list[str] = []
        seen: set[str] = set()

        def extend(ids: Sequence[str]) -> None:
            for corpus_id in ids:
                if corpus_id not in seen:
                    seen.add(corpus_id)
                    chosen.append(corpus_id)

        extend(ground_truth.get(query_id, ()))
        extend([corpus_id for corpus_id, _ in bm25_top.get(query_id, [])[:n_bm25]])
        extend(_sample(_same_completion_pool(query, by_object, corpus_ids, corpus_texts), n_same_completion, seen, rng))
        extend(_sample(corpus_ids, n_random, seen, rng))
        candidates[query_id] = chosen
    return candidates


def rank_candidates(scorer: MethodScorer, candidates: Mapping[str, Sequence[str]], k: int) -> dict[str, Ranking]:
    """Each query's candidates scored by one method: the top k (all when k is None-like large)."""
    rankings: dict[str, Ranking] = {}
    prefetch = getattr(scorer, "prefetch_candidates", None)
    if prefetch is not None:  # e.g. table-backed scores: every (query, candidate) pair in one pass
        prefetch(candidates)
    for query_id in scorer.query_ids:
        ids = list(candidates.get(query_id, ()))
        if not ids:
            rankings[query_id] = []
            continue
        scores = scorer.score_candidates(query_id, ids)  # (C,)
        order = np.argsort(-scores, kind="stable")[:k]
        rankings[query_id] = [(ids[i], float(scores[i])) for i in order]
    return rankings
