"""Closed-set evaluation (FTRACE): rank a small per-query candidate set instead of the corpus.

Per query the candidates are its ground-truth proponents, the BM25 top n, n examples with the
same completion (hard negatives that mention the answer) and n random ones. Every method ranks
the same candidates with its own scores, so the comparison isolates ranking quality from recall.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from trackstar_pipeline.evaluation.bm25 import Bm25Queries
from trackstar_pipeline.evaluation.corpus_shards import ShardedCorpus, facts_by_row, frame_shards
from trackstar_pipeline.attribution.running_top_k import RunningTopK
from trackstar_pipeline.evaluation.scorers import MethodScorer, Ranking
from trackstar_pipeline.evaluation.seeded_random import id_keys, seeded_uniform


def _query_object(fact: Sequence[str] | None) -> str | None:
    return fact[2] if fact is not None and len(fact) == 3 else None


def _objects_present(corpus: ShardedCorpus, objects: set[str], progress: Callable[[str], None] | None) -> set[str]:
    """Which of the queries' fact objects some corpus row's facts have (a pass over the fact column only)."""
    wanted, present = pl.Series(list(objects), dtype=pl.String), set()
    for frame in corpus.frames(["id", "facts"], progress, "candidate pass (fact objects)"):
        present.update(facts_by_row(frame).filter(pl.col("object").is_in(wanted.implode()))["object"].to_list())
    return present


def _pool_mask(frame: pl.DataFrame, by_object: Mapping[str, list[int]], needles: Mapping[int, str],
               n_queries: int) -> np.ndarray:
    """(Q, n) True where the row shares the query's answer: by fact object when known, else by completion text."""
    mask = np.zeros((n_queries, frame.height), dtype=bool)
    if by_object:
        columns = frame.select("id").with_row_index("column")
        queries = pl.DataFrame({"object": list(by_object), "row": list(by_object.values())},
                               schema={"object": pl.String, "row": pl.List(pl.Int64)}).explode("row")
        pairs = (facts_by_row(frame).select("id", "object").unique().join(queries, on="object")
                 .join(columns, on="id"))
        mask[pairs["row"].to_numpy(), pairs["column"].to_numpy()] = True
    for row, needle in needles.items():
        mask[row] = frame["text"].str.contains(needle, literal=True).to_numpy()
    return mask


def _first_unseen(ranking: Ranking, n: int, seen: set[str]) -> list[str]:
    """Up to n ids of a hash-ordered selection, skipping excluded ones and rows outside the pool (score -inf)."""
    chosen = []
    for corpus_id, score in ranking:
        if len(chosen) == n or score == -np.inf:
            break
        if corpus_id not in seen:
            chosen.append(corpus_id)
    return chosen


def build_candidate_sets(
    corpus: ShardedCorpus | pl.DataFrame,
    queries: pl.DataFrame,
    ground_truth: Mapping[str, Sequence[str]],
    bm25_top: Mapping[str, Ranking] | Bm25Queries,
    n_bm25: int = 100,
    n_same_completion: int = 100,
    n_random: int = 100,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[str]]:
    """Query id -> candidates: ground truth, BM25 top n, n same-completion, n random (no repeats).

    `bm25_top` is each query's BM25 ranking (at least n_bm25 deep) or the BM25 queries to stream
    it here. The same-completion and random picks are a uniform draw without replacement, made
    streamable: the n pool rows with the smallest seeded hash of (seed, query id, corpus id) that
    are not already chosen. So a query's set does not depend on the other queries, the corpus order
    or the sharding. One pass over the fact column, one over the shards (text, facts).
    """
    corpus = frame_shards(corpus) if isinstance(corpus, pl.DataFrame) else corpus
    query_ids = queries["id"].to_list()
    objects = [_query_object(fact) for fact in queries["fact"].to_list()] if "fact" in queries.columns \
        else [None] * len(query_ids)
    present = _objects_present(corpus, {o for o in objects if o is not None}, progress)
    by_object: dict[str, list[int]] = {}
    needles: dict[int, str] = {}
    for row, (obj, completion) in enumerate(zip(objects, queries["completion"].to_list())):
        if obj in present:
            by_object.setdefault(obj, []).append(row)
        elif str(completion).strip():
            needles[row] = str(completion).strip()
    room = n_bm25 + max((len(ground_truth.get(q, ())) for q in query_ids), default=0)
    same = RunningTopK(len(query_ids), n_same_completion + room)
    drawn = RunningTopK(len(query_ids), n_random + n_same_completion + room)
    streamed_bm25 = RunningTopK(len(query_ids), n_bm25) if isinstance(bm25_top, Bm25Queries) and n_bm25 > 0 else None
    for frame in corpus.frames(["id", "text", "facts"], progress, "candidate pass"):
        ids, keys = frame["id"].to_list(), id_keys(frame["id"].to_list())
        pool = _pool_mask(frame, by_object, needles, len(query_ids))  # (Q, n)
        same.update(np.where(pool, -seeded_uniform(seed, "same_completion", query_ids, keys), -np.inf), ids)
        drawn.update(-seeded_uniform(seed, "closed_set", query_ids, keys), ids)
        if streamed_bm25 is not None:
            streamed_bm25.update(bm25_top.scores(frame["text"].to_list()), ids)
    if isinstance(bm25_top, Bm25Queries):
        bm25_top = dict(zip(query_ids, streamed_bm25.rankings())) if streamed_bm25 else {}
    candidates: dict[str, list[str]] = {}
    for query_id, same_ranking, drawn_ranking in zip(query_ids, same.rankings(), drawn.rankings()):
        chosen = list(dict.fromkeys([*ground_truth.get(query_id, ()),
                                     *(corpus_id for corpus_id, _ in bm25_top.get(query_id, [])[:n_bm25])]))
        chosen += _first_unseen(same_ranking, n_same_completion, set(chosen))
        chosen += _first_unseen(drawn_ranking, n_random, set(chosen))
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
