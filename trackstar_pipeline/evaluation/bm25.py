"""BM25 baseline, streamed over corpus shards: the model-agnostic retrieval TrackStar is compared against.

The query text is prompt + completion, as in the TrackStar paper: BM25 then finds passages that
state the fact. Tokenization is bm25s's (lowercase, words of 2+ characters, English stopwords
removed); every query and corpus row goes through the same tokenizer.

Scoring is bm25s's default variant ("lucene"), written out so it can stream: a first pass counts
document frequencies and the total length (`Bm25Statistics`, the only corpus-wide state: one
count per vocabulary word), then each shard is scored for all queries at once:

    score(q, doc) = sum over q's tokens t (repeats count) of idf(t) * tf / (tf + k1 (1 - b + b |doc| / avg|doc|))
    idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

Query tokens absent from the corpus add nothing (bm25s drops them too). bm25s scores in float32,
this in float64, so scores agree to float32 precision (tests/evaluation/test_bm25.py).

A row of at least `split_sentences` sentences (training/sentences.py's rule; 0: never) is scored by its
best-matching sentence, each sentence a document of its own in the statistics: "MaxP" (Dai & Callan,
SIGIR 2019). Over a whole passage of several facts the query's words match across sentences (its subject
in one fact, its relation in another), and BM25 ranked such a row above the one stating the fact for
27-37% of the queries; by its best sentence, that row states the fact. Rows of fewer sentences are whole
documents, as in plain BM25. A sentence with a pronoun ('She lives in Rome.') is scored after the row's
first and last sentences naming someone (training/sentences.py's pieces), or it would match no subject:
on biography worlds that lifted BM25's MRR from 0.844-0.869 to 0.964-0.968 (docs/quality_results.md,
sessions 17 and 18).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import bm25s
import numpy as np
import polars as pl
import torch

from trackstar_pipeline.evaluation.corpus_shards import ShardedCorpus
from trackstar_pipeline.attribution.running_top_k import Ranking, RunningTopK
from trackstar_pipeline.evaluation.scorers import RowScorer, matrix_scorer
from trackstar_pipeline.training.sentences import passage_texts

if TYPE_CHECKING:
    from trackstar_pipeline.evaluation.stream import ShardRows


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """bm25s's tokenizer with English stopwords, as words (not ids)."""
    if not len(texts):
        return []
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def query_texts(prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
    """The text BM25 searches with: the prompt followed directly by its completion."""
    return [prompt + completion for prompt, completion in zip(prompts, completions)]


@dataclass(frozen=True)
class ScoredUnits:
    """A block of corpus rows as the documents BM25 scores: `units` in row order, row i's from `starts[i]`."""

    units: list[str]
    starts: np.ndarray  # (n_rows,) int64, every row has at least one unit

    @property
    def is_rows(self) -> bool:
        return len(self.units) == len(self.starts)


def scored_units(texts: Sequence[str], split_sentences: int) -> ScoredUnits:
    """Each row whole (split_sentences 0), or as its self-contained pieces (its sentences, a pronoun's after its
    anchors) when it has at least split_sentences sentences (training/sentences.py's passage_texts, the rule
    pretraining splits rows by)."""
    if split_sentences <= 0:
        return ScoredUnits(list(texts), np.arange(len(texts), dtype=np.int64))
    units: list[str] = []
    starts = np.empty(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        starts[row] = len(units)
        units.extend(passage_texts(text, split_sentences))
    return ScoredUnits(units, starts)


@dataclass(frozen=True)
class Bm25Statistics:
    """Corpus-wide BM25 state: the document count, the total token count and each word's document frequency.

    Documents are `scored_units` at `split_sentences`, which the queries' scoring reuses, so both passes cut
    rows the same way."""

    n_documents: int
    total_length: int
    document_frequency: dict[str, int]
    split_sentences: int
    n_rows: int
    """Corpus rows the documents came from (n_documents when no row was split)."""

    @property
    def average_length(self) -> float:
        return self.total_length / self.n_documents if self.n_documents else 0.0


def bm25_statistics(text_blocks: Iterable[Sequence[str]], split_sentences: int = 0) -> Bm25Statistics:
    """The first pass: document frequencies and lengths over blocks of corpus texts (rows of at least
    split_sentences sentences counted as their sentences; 0: every row whole)."""
    if split_sentences < 0:
        raise ValueError(f"bm25: split_sentences must be 0 (never) or a sentence count, got {split_sentences}")
    frequency: Counter[str] = Counter()
    n_documents = total_length = n_rows = 0
    for texts in text_blocks:
        units = scored_units(texts, split_sentences).units
        for tokens in tokenize(units):
            frequency.update(set(tokens))
            total_length += len(tokens)
        n_documents += len(units)
        n_rows += len(texts)
    return Bm25Statistics(n_documents, total_length, dict(frequency), split_sentences, n_rows)


class Bm25Queries:
    """Every query against the corpus statistics; `scores(texts)` scores one block of corpus rows for all of them."""

    def __init__(self, statistics: Bm25Statistics, texts_of_queries: Sequence[str], k1: float = 1.5,
                 b: float = 0.75) -> None:
        self.statistics, self.k1, self.b = statistics, k1, b
        query_tokens = tokenize(texts_of_queries)
        frequency = statistics.document_frequency
        self.vocabulary = sorted({t for tokens in query_tokens for t in tokens if t in frequency})
        column = {term: i for i, term in enumerate(self.vocabulary)}
        n = statistics.n_documents
        self.idf = np.array([np.log(1.0 + (n - frequency[t] + 0.5) / (frequency[t] + 0.5)) for t in self.vocabulary])
        self.query_counts = np.zeros((len(query_tokens), len(self.vocabulary)))  # (Q, V) repeats count
        for row, tokens in enumerate(query_tokens):
            for token in tokens:
                if token in column:
                    self.query_counts[row, column[token]] += 1.0
        self.n_queries = len(query_tokens)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(Q, n) float64 BM25 scores of every query against one block of corpus texts (a split row: its best sentence)."""
        if not len(texts) or not self.vocabulary:
            return np.zeros((self.n_queries, len(texts)))
        block = scored_units(texts, self.statistics.split_sentences)
        unit_scores = self._unit_scores(block.units)
        return unit_scores if block.is_rows else np.maximum.reduceat(unit_scores, block.starts, axis=1)

    def _unit_scores(self, texts: Sequence[str]) -> np.ndarray:
        """(Q, n) scores of documents as given."""
        tokens = pl.DataFrame({"tokens": tokenize(texts)}, schema={"tokens": pl.List(pl.String)}).with_row_index("doc")
        lengths = tokens["tokens"].list.len().to_numpy().astype(np.float64)  # (n,)
        terms = pl.DataFrame({"term": self.vocabulary}).with_row_index("column")
        counts = (tokens.explode("tokens").rename({"tokens": "term"}).join(terms, on="term")
                  .group_by("doc", "column").len().sort("doc", "column"))  # one row per (document, query word)
        # sorted, so each document's words are summed in vocabulary order: equal documents score exactly equal
        doc, col = counts["doc"].to_numpy().astype(np.int64), counts["column"].to_numpy().astype(np.int64)
        tf = counts["len"].to_numpy().astype(np.float64)
        norm = self.k1 * (1 - self.b + self.b * lengths[doc] / self.statistics.average_length)
        weights = self.idf[col] * tf / (tf + norm)  # (nnz,)
        sparse = torch.sparse_coo_tensor(torch.from_numpy(np.stack([doc, col])), torch.from_numpy(weights),
                                         (len(texts), len(self.vocabulary)), check_invariants=False)  # (n, V)
        return torch.sparse.mm(sparse, torch.from_numpy(self.query_counts).T).T.numpy()  # (Q, n)


def bm25_scorer(corpus_ids: Sequence[str], corpus_texts: Sequence[str], query_ids: Sequence[str],
                texts_of_queries: Sequence[str], k1: float = 1.5, b: float = 0.75, split_sentences: int = 0,
                ) -> RowScorer:
    """A small in-memory corpus as one block (tests, notebooks); evaluation streams the same scores by shard."""
    if len(corpus_ids) != len(corpus_texts):
        raise ValueError(f"bm25: {len(corpus_ids)} corpus ids but {len(corpus_texts)} texts")
    if len(query_ids) != len(texts_of_queries):
        raise ValueError(f"bm25: {len(query_ids)} query ids but {len(texts_of_queries)} query texts")
    queries = Bm25Queries(bm25_statistics([corpus_texts], split_sentences), texts_of_queries, k1, b)
    return matrix_scorer(query_ids, corpus_ids, queries.scores(corpus_texts), "bm25")


def corpus_bm25(corpus: ShardedCorpus, texts_of_queries: Sequence[str], split_sentences: int = 0,
                progress: Callable[[str], None] | None = None) -> Bm25Queries:
    """The statistics pass over every shard's text (reported to `progress`), then the queries ready to score shards."""
    frames = corpus.frames(["text"], progress, "statistics pass (BM25)")
    return Bm25Queries(bm25_statistics((frame["text"].to_list() for frame in frames), split_sentences), texts_of_queries)


def bm25_top_k(corpus: ShardedCorpus, query_ids: Sequence[str], texts_of_queries: Sequence[str], k: int,
               split_sentences: int = 0) -> dict[str, Ranking]:
    """Each query's k best corpus rows by BM25: two streamed passes (statistics, then scores with a running top-k)."""
    queries = corpus_bm25(corpus, texts_of_queries, split_sentences)
    best = RunningTopK(len(query_ids), k)
    for frame in corpus.frames(["id", "text"]):
        best.update(queries.scores(frame["text"].to_list()), frame["id"].to_list())
    return dict(zip(query_ids, best.rankings()))


class Bm25Method:
    """BM25 in evaluation's shard stream (stream.ShardMethod)."""

    name = "bm25"

    def __init__(self, queries: Bm25Queries) -> None:
        self.queries = queries

    def scores(self, shard: ShardRows) -> np.ndarray:
        return self.queries.scores(shard.frame["text"].to_list())  # (Q, n)
