"""BM25 baseline (the `bm25s` package): the model-agnostic retrieval TrackStar is compared against.

The query text is prompt + completion, as in the TrackStar paper: BM25 then finds passages that
state the fact. Tokenization is bm25s's default (lowercase, words of 2+ characters, English
stopwords removed); every query and corpus row goes through the same tokenizer.
"""

from __future__ import annotations

from typing import Sequence

import bm25s
import numpy as np

from trackstar_pipeline.evaluation.scorers import RowScorer


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def query_texts(prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
    """The text BM25 searches with: the prompt followed directly by its completion."""
    return [prompt + completion for prompt, completion in zip(prompts, completions)]


def bm25_scorer(corpus_ids: Sequence[str], corpus_texts: Sequence[str], query_ids: Sequence[str],
                texts_of_queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> RowScorer:
    """Index the corpus once; each query's full score row is computed on demand (sparse, fast)."""
    if len(corpus_ids) != len(corpus_texts):
        raise ValueError(f"bm25: {len(corpus_ids)} corpus ids but {len(corpus_texts)} texts")
    if len(query_ids) != len(texts_of_queries):
        raise ValueError(f"bm25: {len(query_ids)} query ids but {len(texts_of_queries)} query texts")
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(_tokenize(corpus_texts), show_progress=False)
    query_tokens = _tokenize(texts_of_queries)
    n_corpus = len(corpus_ids)

    def row(i: int) -> np.ndarray:
        tokens = query_tokens[i]
        if not tokens:  # a query of stopwords only matches nothing
            return np.zeros(n_corpus)
        return retriever.get_scores(tokens)  # (N,)

    return RowScorer(query_ids, corpus_ids, row, "bm25")
