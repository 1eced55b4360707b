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

from trackstar_pipeline.attribution.running_top_k import Ranking, RunningTopK


class MethodScorer(Protocol):
    """What the evaluation needs from a method."""

    query_ids: Sequence[str]

    def top_k(self, k: int) -> dict[str, Ranking]:
        """Query id -> the k best corpus ids with scores, descending."""

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """Scores of the given corpus ids for one query, in the given order."""


def _top_of_row(row: np.ndarray, ids: Sequence[str], k: int) -> Ranking:
    """Top k of one score row, descending; equal scores keep corpus order (the running top-k's rule)."""
    if k <= 0:
        return []
    best = RunningTopK(1, k)
    best.update(row[None, :], ids)  # (1, N)
    return best.rankings()[0]


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


def checked_head_pool(head: int, head_pool: int | None, head_pool_ratio: float) -> int:
    """The pool the fusion's head is picked from (head_pool, or head when None), after checking the head
    arguments: shared by fusion_scores, FusionScorer and evaluate's build_methods (which checks the
    settings before any corpus pass), so a bad setting fails before the work starts."""
    pool = head if head_pool is None else head_pool
    if pool < head:
        raise ValueError(f"rank fusion: head_pool {pool} is smaller than head {head}; the leading rows are "
                         "picked from the first method's top head_pool")
    if not 0.0 <= head_pool_ratio <= 1.0:
        raise ValueError(f"rank fusion: head_pool_ratio {head_pool_ratio} is not between 0 and 1")
    return pool


def checked_follow(follow: int, page: int) -> None:
    """The follow arguments' check, shared like checked_head_pool."""
    if follow < 0 or page < 1:
        raise ValueError(f"rank fusion: follow {follow} must be >= 0 and page {page} >= 1 (follow rows come "
                         "right after the fused first page)")


def checked_near_tie(near_tie: float) -> None:
    """The near_tie argument's check, shared like checked_head_pool (with no head it changes nothing)."""
    if not 0.0 <= near_tie <= 1.0:
        raise ValueError(f"rank fusion: near_tie {near_tie} is not between 0 and 1 (a share of BM25's best score)")


def fusion_scores(ranked: Sequence[Sequence[str]], weights: Sequence[float], rrf_k: float,
                  head: int = 0, head_pool: int | None = None, head_scores: Sequence[float] | None = None,
                  head_pool_ratio: float = 0.0, follow: int = 0, page: int = 10,
                  near_tie: float = 0.0) -> dict[str, float]:
    """Weighted reciprocal rank fusion of id lists (best first): sum over lists of w / (rrf_k + rank).

    The first list's top `head` lead, above every fused score: a method that is nearly always right at
    rank 1 (BM25 on fact lookups) keeps a row of its own first, so the fusion's MRR cannot fall far
    below that method's, while the rest of the top k is fused. With `head_pool` > head the leading rows
    are picked from the first list's top `head_pool`, in the order the other lists rank them (the first
    list's order breaks ties): of the rows BM25 is sure of, the one TrackStar ranks highest leads, which
    is often already in TrackStar's own top k, so it displaces none of TrackStar's proponents.
    With `head_scores` (the first list's scores, best first) and `head_pool_ratio` > 0, a pool row beyond
    the first `head` counts only if it scores at least head_pool_ratio x the first row's: BM25 scores the
    rows that state the fact in the query's words nearly alike, and a row about another fact well below,
    so the pick among near-ties keeps BM25's precision at rank 1.
    With `follow` > 0, the first list's top `follow` rows that the fused first `page` left out come right
    after that page, above every other row: the page is the set a reader (and tail-patch@page) takes as
    the proponents, and where BM25's first row missed the fact, its next rows, which often state it,
    are not buried at rank 70 behind TrackStar's tail. Scores keep that order strictly: those rows
    score between the page's last and the next row (_with_followers).
    With `near_tie` > 0 and a head, the first list's best row outside the head leads too, right after it,
    when it scores at least near_tie x the first list's best (head_scores): where BM25 cannot tell its
    first two rows apart, the fact is as likely in its second, so both lead.
    """
    if len(weights) != len(ranked):
        raise ValueError(f"rank fusion: {len(weights)} weights for {len(ranked)} methods; give one weight per method")
    pool = checked_head_pool(head, head_pool, head_pool_ratio)
    checked_follow(follow, page)
    checked_near_tie(near_tie)
    totals: dict[str, float] = {}
    for weight, ids in zip(weights, ranked):
        for rank, corpus_id in enumerate(ids, start=1):
            totals[corpus_id] = totals.get(corpus_id, 0.0) + weight / (rrf_k + rank)
    ceiling = sum(weights) / (rrf_k + 1)  # the most a fused id can score
    candidates = list(ranked[0][:pool]) if ranked and head else []
    if head_pool_ratio > 0.0 and len(candidates) > head:
        if head_scores is None or len(head_scores) < len(candidates):
            raise ValueError("rank fusion: head_pool_ratio needs the first method's scores of its top head_pool")
        floor = _least_within(head_scores[0], head_pool_ratio)
        candidates = candidates[:head] + [corpus_id for corpus_id, score in zip(candidates[head:], head_scores[head:])
                                          if score >= floor]
    if pool > head:
        support: dict[str, float] = {}
        for weight, ids in zip(weights[1:], ranked[1:]):
            for rank, corpus_id in enumerate(ids, start=1):
                support[corpus_id] = support.get(corpus_id, 0.0) + weight / (rrf_k + rank)
        candidates.sort(key=lambda corpus_id: -support.get(corpus_id, 0.0))  # stable: first list's order on ties
    lead = candidates[:head]
    if near_tie > 0.0 and lead:
        lead += _near_tie_row(ranked[0], head_scores, lead, near_tie)
    for rank, corpus_id in enumerate(lead, start=1):
        totals[corpus_id] = ceiling + 1.0 + len(lead) - rank
    if follow and ranked:
        return _with_followers(totals, list(ranked[0][:follow]), page)
    return totals


def _least_within(best: float, share: float) -> float:
    """The least score that is at least `share` of `best` (measured from zero, so also for a negative best)."""
    return best - (1.0 - share) * abs(best)


def _near_tie_row(first: Sequence[str], scores: Sequence[float] | None, lead: Sequence[str],
                  near_tie: float) -> list[str]:
    """[the first list's best row outside the lead] when it scores at least near_tie x the list's best, else []."""
    if scores is None:
        raise ValueError("rank fusion: near_tie needs the first method's scores, best first")
    floor = _least_within(scores[0], near_tie) if scores else 0.0
    for position, corpus_id in enumerate(first):
        if corpus_id not in lead:
            return [corpus_id] if position < len(scores) and scores[position] >= floor else []
    return []


def _with_followers(totals: dict[str, float], followers: list[str], page: int) -> dict[str, float]:
    """totals with the followers the top `page` left out moved to just below it, in their given order.

    Every score after the page ends strictly below the page's last and the moved rows strictly decrease,
    so the order holds under any tie rule (the metrics rank ties pessimistically, the closed set by
    candidate order): where the next row ties the page's last, the rows after the page are all lowered
    by the same tiny amount, which keeps their own order and ties. fusion_scores has checked page.
    """
    order = sorted(totals, key=lambda corpus_id: -totals[corpus_id])  # stable: insertion order on ties
    first_page = order[:page]
    moved = [corpus_id for corpus_id in dict.fromkeys(followers) if corpus_id in totals and corpus_id not in first_page]
    if not moved:
        return totals
    rest = [corpus_id for corpus_id in order[page:] if corpus_id not in moved]
    floor = totals[first_page[-1]]
    below = totals[rest[0]] if rest else floor - 1.0
    lowered = 0.0
    if not below < floor:  # a tie at the page's edge: make room below the page
        lowered = (below - floor) + 1e-9 * max(abs(floor), 1e-12) * (len(moved) + 2)
        below -= lowered
    step = (floor - below) / (len(moved) + 1)
    placed = {corpus_id: floor - i * step for i, corpus_id in enumerate(moved, start=1)}
    result = {corpus_id: totals[corpus_id] for corpus_id in first_page}
    result.update(placed)
    result.update({corpus_id: totals[corpus_id] - lowered for corpus_id in rest})
    return result


class FusionScorer:
    """Rank fusion of several methods (fusion_scores): weighted RRF, optionally led by one method's top."""

    def __init__(self, scorers: Sequence[MethodScorer], rrf_k: float = 60, depth: int = 1000,
                 query_ids: Sequence[str] | None = None, weights: Sequence[float] | None = None,
                 head_method: int = 0, head: int = 0, head_pool: int | None = None,
                 head_pool_ratio: float = 0.0, follow: int = 0, page: int = 10,
                 names: Sequence[str] | None = None, near_tie: float = 0.0) -> None:
        """query_ids: the queries to fuse (each method must score them); default, those every method scores.
        names: the fused methods' names, one per scorer, for the report (empty: not named).
        weights: one per method (default all 1); head: how many of scorers[head_method]'s best lead;
        head_pool: they are picked from its top head_pool in the other methods' order, head_pool_ratio:
        among the rows scoring at least that share of its best; follow: how many of its top follow the
        fused first `page`; near_tie: its next row leads too when it scores at least that share of its
        best (fusion_scores)."""
        if len(scorers) < 2:
            raise ValueError("rank fusion needs at least two methods")
        if not 0 <= head_method < len(scorers):
            raise ValueError(f"rank fusion: head_method {head_method} is not one of the {len(scorers)} methods")
        if names is not None and len(names) != len(scorers):
            raise ValueError(f"rank fusion: {len(names)} names for {len(scorers)} methods; give one name per method")
        self.scorers = list(scorers)
        self.names = list(names or [])
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
        self.weights = [1.0] * len(scorers) if weights is None else [float(w) for w in weights]
        self.head_method = head_method
        self.head = head
        self.head_pool = checked_head_pool(head, head_pool, head_pool_ratio)
        self.head_pool_ratio = head_pool_ratio
        checked_follow(follow, page)
        self.follow, self.page = follow, page
        checked_near_tie(near_tie)
        self.near_tie = near_tie
        self.depth = depth
        """Open set: each method's top `depth` are fused; ids outside a method's top add nothing."""

    def _fuse(self, ranked: list[list[str]], head_scores: Sequence[float]) -> dict[str, float]:
        """fusion_scores with the head method's list first (its order also breaks ties)."""
        order = [self.head_method] + [i for i in range(len(ranked)) if i != self.head_method]
        return fusion_scores([ranked[i] for i in order], [self.weights[i] for i in order], self.rrf_k, self.head,
                             self.head_pool, head_scores, self.head_pool_ratio, self.follow, self.page,
                             self.near_tie)

    def top_k(self, k: int) -> dict[str, Ranking]:
        depth = max(k, self.depth)
        tops = [scorer.top_k(depth) for scorer in self.scorers]
        fused: dict[str, Ranking] = {}
        for query_id in self.query_ids:
            totals = self._fuse([[corpus_id for corpus_id, _ in top[query_id]] for top in tops],
                                [float(score) for _, score in tops[self.head_method][query_id]])
            fused[query_id] = sorted(totals.items(), key=lambda item: -item[1])[:k]  # stable on ties
        return fused

    def prefetch_candidates(self, candidates: Mapping[str, Sequence[str]]) -> None:
        for scorer in self.scorers:
            prefetch = getattr(scorer, "prefetch_candidates", None)
            if prefetch is not None:
                prefetch(candidates)

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """The same fusion over each method's ranking of the candidates alone (closed set)."""
        ranked, head_scores = [], []
        for method, scorer in enumerate(self.scorers):
            scores = np.asarray(scorer.score_candidates(query_id, candidate_ids))
            order = np.argsort(-scores, kind="stable")
            ranked.append([candidate_ids[i] for i in order])
            if method == self.head_method:
                head_scores = [float(scores[i]) for i in order]
        totals = self._fuse(ranked, head_scores)
        return np.array([totals[candidate_id] for candidate_id in candidate_ids])


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
