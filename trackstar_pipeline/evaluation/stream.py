"""Evaluation's main pass: every streamed method scores each corpus shard once, for all evaluated queries.

Per shard and method the (Q_eval, n_shard) score block updates (a) a running top-k per query (the
open set, deep enough for fusion and the closed set's BM25 top) and (b) the scores of that shard's
rows that are in some query's closed-set candidate list. Only those survive the shard, so memory
does not grow with the corpus. A method is anything with `name` and `scores(shard)`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import polars as pl
import torch

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.evaluation.corpus_shards import ShardedCorpus, worth_reporting
from trackstar_pipeline.attribution.running_top_k import Ranking, RunningTopK
from trackstar_pipeline.evaluation.seeded_random import id_keys, random_scores

SHARD_COLUMNS = ("id", "text")


class ShardRows:
    """One shard during the pass: its rows, and on first use its stored gradients, tokenized examples, id keys."""

    def __init__(self, name: str, frame: pl.DataFrame, corpus: ShardedCorpus,
                 encode: Callable[[pl.DataFrame], list[TokenizedExample]] | None = None) -> None:
        self.name, self.frame, self.corpus, self._encode = name, frame, corpus, encode
        self.ids: list[str] = frame["id"].to_list()
        self.cache: dict[Any, Any] = {}
        """What several methods share within this shard (e.g. one gradient pass feeds four ablations)."""

    @cached_property
    def id_array(self) -> np.ndarray:
        return np.asarray(self.ids, dtype=object)  # (n,)

    @cached_property
    def keys(self) -> np.ndarray:
        return id_keys(self.ids)  # (n,) uint64

    @cached_property
    def gradients(self) -> torch.Tensor:
        return self.corpus.gradients(self.name, self.ids)  # (n, d) raw, at the table's (d, correction)

    @cached_property
    def examples(self) -> list[TokenizedExample]:
        if self._encode is None:
            raise ValueError("a model-based method needs the shard's tokenized examples; evaluate with a tokenizer")
        return self._encode(self.frame)

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


class ShardMethod(Protocol):
    """A method evaluated in the stream: all evaluated queries against one shard."""

    name: str

    def scores(self, shard: ShardRows) -> np.ndarray | torch.Tensor:
        """(Q_eval, n_shard) scores in the shard's row order."""


class VectorMethod:
    """Dot products of fixed query vectors with vectors made per shard (TrackStar variants, embeddings)."""

    def __init__(self, name: str, query_vectors: torch.Tensor, corpus_vectors: Callable[[ShardRows], torch.Tensor]):
        self.name = name
        self.query_vectors = query_vectors.float()  # (Q, d)
        self.corpus_vectors = corpus_vectors

    def scores(self, shard: ShardRows) -> torch.Tensor:
        return self.query_vectors @ self.corpus_vectors(shard).float().T  # (Q, n)


class RandomMethod:
    """The random baseline: uniform per (seed, query id, corpus id)."""

    def __init__(self, query_ids: Sequence[str], seed: int) -> None:
        self.name, self.query_ids, self.seed = "random", list(query_ids), seed

    def scores(self, shard: ShardRows) -> np.ndarray:
        return random_scores(self.seed, self.query_ids, shard.keys)  # (Q, n)


class CandidateScores:
    """Per query, the scores of its closed-set candidates, filled in as their shards stream past."""

    def __init__(self, query_ids: Sequence[str], candidates: Mapping[str, Sequence[str]]) -> None:
        self.query_ids = list(query_ids)
        self.candidates = {q: list(candidates.get(q, ())) for q in self.query_ids}
        self.slots: dict[str, list[tuple[int, int]]] = {}  # candidate id -> [(query row, position in its list)]
        for row, query_id in enumerate(self.query_ids):
            for position, candidate in enumerate(self.candidates[query_id]):
                self.slots.setdefault(candidate, []).append((row, position))

    def shard_slots(self, shard: ShardRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query rows, positions, shard columns), one entry per (query, candidate) pair whose row is in this shard."""
        rows, positions, columns = [], [], []
        for column, example_id in enumerate(shard.ids):
            for row, position in self.slots.get(example_id, ()):
                rows.append(row)
                positions.append(position)
                columns.append(column)
        return np.array(rows, dtype=np.int64), np.array(positions, dtype=np.int64), np.array(columns, dtype=np.int64)

    def empty(self) -> dict[str, np.ndarray]:
        return {q: np.full(len(ids), np.nan) for q, ids in self.candidates.items()}

    def check_complete(self, scores: Mapping[str, np.ndarray], name: str) -> None:
        """Every candidate must have been scored: one that is not a corpus row is an error naming it."""
        absent = [self.candidates[q][i] for q, values in scores.items() for i in np.flatnonzero(np.isnan(values))]
        if absent:
            raise KeyError(f"{name}: {len(set(absent))} closed-set candidates are not corpus rows, e.g. "
                           f"{sorted(set(absent))[:3]}")


class StreamedScores:
    """What the stream kept of one method, answering evaluation's MethodScorer questions."""

    def __init__(self, name: str, rankings: Mapping[str, Ranking], candidates: Mapping[str, Sequence[str]],
                 candidate_scores: Mapping[str, np.ndarray]) -> None:
        self.name = name
        self.query_ids = list(rankings)
        self._rankings = dict(rankings)
        self._candidate_scores = {q: dict(zip(candidates[q], scores.tolist())) for q, scores in candidate_scores.items()}

    def top_k(self, k: int) -> dict[str, Ranking]:
        return {query_id: list(ranking[:k]) for query_id, ranking in self._rankings.items()}

    def score_candidates(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        known = self._candidate_scores.get(query_id, {})
        missing = [c for c in candidate_ids if c not in known]
        if missing:
            raise KeyError(f"{self.name}: {missing[:3]} were not closed-set candidates of {query_id!r} during the "
                           "pass; stream with those candidates")
        return np.array([known[c] for c in candidate_ids], dtype=np.float64)  # (C,)


def stream_methods(corpus: ShardedCorpus, methods: Sequence[ShardMethod], query_ids: Sequence[str], depth: int,
                   candidates: Mapping[str, Sequence[str]],
                   encode: Callable[[pl.DataFrame], list[TokenizedExample]] | None = None,
                   progress: Callable[[str], None] = print) -> dict[str, StreamedScores]:
    """One pass over the shards: each method's top-`depth` per query and its candidates' scores."""
    best = {method.name: RunningTopK(len(query_ids), depth) for method in methods}
    slots = CandidateScores(query_ids, candidates)
    found = {method.name: slots.empty() for method in methods}
    names = list(corpus.names)
    for index, name in enumerate(names):
        shard = ShardRows(name, corpus.read(name, SHARD_COLUMNS), corpus, encode)
        rows, positions, columns = slots.shard_slots(shard)
        for method in methods:
            block = method.scores(shard)
            block = (block.detach().cpu().double().numpy() if isinstance(block, torch.Tensor)
                     else np.asarray(block, dtype=np.float64))  # (Q, n)
            best[method.name].update(block, shard.id_array)
            values = block[rows, columns]  # (pairs,)
            for row, position, value in zip(rows.tolist(), positions.tolist(), values.tolist()):
                found[method.name][slots.query_ids[row]][position] = value
        if worth_reporting(index, len(names)):
            progress(f"evaluation pass: shard {index + 1}/{len(names)} done ({len(methods)} methods)")
    result = {}
    for method in methods:
        slots.check_complete(found[method.name], method.name)
        result[method.name] = StreamedScores(method.name, dict(zip(query_ids, best[method.name].rankings())),
                                             slots.candidates, found[method.name])
    return result
