"""One interface for every attribution method: rank the whole corpus, or score a candidate set.

The open set needs each method's top-k over the corpus; the closed set needs the same method's
scores for a per-query list of candidates. A `MethodScorer` answers both, so every method
(TrackStar and its ablations, BM25, embeddings, random, fusion) is evaluated by the same code.
The methods evaluation builds itself are streamed over the corpus shards (stream.py) and answer
through `stream.StreamedScores`; the scorers here serve given methods and small in-memory corpora.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol, Sequence

import numpy as np


Ranking = list[tuple[str, float]]


class MethodScorer(Protocol):
    """What the evaluation needs from a method."""

    query_ids: Sequence[str]

    def top_k(self, k: int) -> dict[str, Ranking]:
        """Query id -> the k best corpus ids with scores, descending."""

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """Scores of the given corpus ids for one query, in the given order."""


def _top_of_row(row: np.ndarray, ids: Sequence[str], k: int) -> Ranking:
    """Top k of one score row, descending; equal scores keep corpus order (stable)."""
    k = min(k, row.shape[0])
    if k <= 0:
        return []
    part = np.argpartition(-row, k - 1)[:k] if k < row.shape[0] else np.arange(row.shape[0])
    order = part[np.lexsort((part, -row[part]))]  # score descending, then corpus index
    return [(ids[i], float(row[i])) for i in order]


def _index_of(ids: Sequence[str]) -> dict[str, int]:
    index = {corpus_id: i for i, corpus_id in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError("corpus ids must be unique; deduplicate the corpus before evaluating")
    return index


def _positions(index: Mapping[str, int], candidate_ids: Sequence[str], where: str) -> np.ndarray:
    try:
        return np.fromiter((index[c] for c in candidate_ids), dtype=np.int64, count=len(candidate_ids))
    except KeyError as error:
        raise KeyError(f"{where}: candidate {error.args[0]!r} is not a corpus id") from None


class RowScorer:
    """A method that can produce a full score row over the corpus for one query at a time."""

    def __init__(self, query_ids: Sequence[str], corpus_ids: Sequence[str],
                 row: Callable[[int], np.ndarray], name: str = "scorer") -> None:
        self.query_ids = list(query_ids)
        self.corpus_ids = list(corpus_ids)
        self._corpus_index = _index_of(self.corpus_ids)
        self._query_index = {query_id: i for i, query_id in enumerate(self.query_ids)}
        self._row = row
        self.name = name

    def row(self, query_id: str) -> np.ndarray:
        """All corpus scores for one query, shape (N,)."""
        return np.asarray(self._row(self._query_index[query_id]), dtype=np.float64)

    def top_k(self, k: int) -> dict[str, Ranking]:
        return {query_id: _top_of_row(self.row(query_id), self.corpus_ids, k) for query_id in self.query_ids}

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        return self.row(query_id)[_positions(self._corpus_index, candidate_ids, self.name)]


def matrix_scorer(query_ids: Sequence[str], corpus_ids: Sequence[str], scores: np.ndarray,
                  name: str = "matrix") -> RowScorer:
    """A method given as a dense (Q, N) score matrix (small corpora, tests)."""
    scores = np.asarray(scores)
    if scores.shape != (len(query_ids), len(corpus_ids)):
        raise ValueError(f"{name}: score matrix has shape {scores.shape}, expected "
                         f"({len(query_ids)} queries, {len(corpus_ids)} corpus rows)")
    return RowScorer(query_ids, corpus_ids, lambda i: scores[i], name)


def random_scorer(query_ids: Sequence[str], corpus_ids: Sequence[str], seed: int) -> RowScorer:
    """Uniform random scores, reproducible per (seed, query id, corpus id): independent of query and corpus order."""
    from trackstar_pipeline.evaluation.seeded_random import id_keys, random_scores

    ids, keys = list(query_ids), id_keys(corpus_ids)
    return RowScorer(ids, corpus_ids, lambda i: random_scores(seed, [ids[i]], keys)[0], "random")


def _rank_positions(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each entry under descending score, ties by position (stable)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


class FusionScorer:
    """Reciprocal rank fusion: score = sum over methods of 1 / (rrf_k + rank in that method)."""

    def __init__(self, scorers: Sequence[MethodScorer], rrf_k: int = 60, depth: int = 1000,
                 query_ids: Sequence[str] | None = None) -> None:
        """query_ids: the queries to fuse (each method must score them); default, those every method scores."""
        if len(scorers) < 2:
            raise ValueError("rank fusion needs at least two methods")
        self.scorers = list(scorers)
        common = set(scorers[0].query_ids).intersection(*(scorer.query_ids for scorer in scorers[1:]))
        if query_ids is None:
            self.query_ids = [query_id for query_id in scorers[0].query_ids if query_id in common]
        else:
            missing = [query_id for query_id in query_ids if query_id not in common]
            if missing:
                raise ValueError(f"rank fusion: queries {missing[:3]} ({len(missing)} in all) are not scored by "
                                 "every fused method; give each method those queries or fuse fewer")
            self.query_ids = list(query_ids)
        self.rrf_k = rrf_k
        self.depth = depth
        """Open set: each method's top `depth` are fused; ids outside a method's top add nothing."""

    def top_k(self, k: int) -> dict[str, Ranking]:
        depth = max(k, self.depth)
        tops = [scorer.top_k(depth) for scorer in self.scorers]
        fused: dict[str, Ranking] = {}
        for query_id in self.query_ids:
            totals: dict[str, float] = {}
            for top in tops:
                for rank, (corpus_id, _) in enumerate(top[query_id], start=1):
                    totals[corpus_id] = totals.get(corpus_id, 0.0) + 1.0 / (self.rrf_k + rank)
            ordered = sorted(totals.items(), key=lambda item: -item[1])  # stable: first method's order on ties
            fused[query_id] = ordered[:k]
        return fused

    def prefetch_candidates(self, candidates: Mapping[str, Sequence[str]]) -> None:
        for scorer in self.scorers:
            prefetch = getattr(scorer, "prefetch_candidates", None)
            if prefetch is not None:
                prefetch(candidates)

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        total = np.zeros(len(candidate_ids))
        for scorer in self.scorers:
            total += 1.0 / (self.rrf_k + _rank_positions(scorer.score_candidates(query_id, candidate_ids)))
        return total


class PrecomputedScorer:
    """Open-set rankings computed elsewhere (e.g. the LanceDB proponents) plus a candidate scorer."""

    def __init__(self, rankings: Mapping[str, Sequence[tuple[str, float]]],
                 candidates: Callable[[str, Sequence[str]], np.ndarray] | None = None) -> None:
        self.query_ids = list(rankings)
        self._rankings = {query_id: list(ranking) for query_id, ranking in rankings.items()}
        self._candidates = candidates

    def top_k(self, k: int) -> dict[str, Ranking]:
        return {query_id: sorted(ranking, key=lambda item: -item[1])[:k]
                for query_id, ranking in self._rankings.items()}

    def prefetch_candidates(self, candidates: Mapping[str, Sequence[str]]) -> None:
        """Let a batch-capable candidate scorer (table_search.TableCandidateScores) score every query at once."""
        prefetch = getattr(self._candidates, "prefetch", None)
        if prefetch is not None:
            prefetch(candidates)

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        if self._candidates is None:
            raise ValueError("this method was given as precomputed rankings without a candidate scorer; "
                             "pass `candidates=` to score the closed set")
        return np.asarray(self._candidates(query_id, candidate_ids), dtype=np.float64)
