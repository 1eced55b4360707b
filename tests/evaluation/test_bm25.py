"""Streamed BM25 against the bm25s package (its default 'lucene' variant) on a small corpus cut into shards."""

import random

import bm25s
import numpy as np
import polars as pl

from trackstar_pipeline.evaluation.bm25 import bm25_statistics, bm25_top_k, tokenize
from trackstar_pipeline.evaluation.corpus_shards import frame_shards

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda paris rome the of and in".split()
QUERIES = ["alpha alpha beta paris", "kappa rome wordnotincorpus", "zeta of the", "the and of"]


def _corpus(n: int = 300) -> pl.DataFrame:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) for _ in range(n)]
    return pl.DataFrame({"id": [f"c{i:03d}" for i in range(n)], "text": texts})


def test_streamed_top_k_matches_bm25s():
    corpus = _corpus()
    reference = bm25s.BM25(k1=1.5, b=0.75)  # bm25s's defaults: method "lucene", k1 1.5, b 0.75
    reference.index(tokenize(corpus["text"].to_list()), show_progress=False)
    ids = corpus["id"].to_list()
    top = bm25_top_k(frame_shards(corpus, 4), [f"q{i}" for i in range(len(QUERIES))], QUERIES, k=15)
    for i, text in enumerate(QUERIES):
        tokens = tokenize([text])[0]
        scores = reference.get_scores(tokens) if tokens else np.zeros(len(ids))  # (N,) float32
        expected = np.argsort(-scores.astype(np.float64), kind="stable")[:15]
        found = top[f"q{i}"]
        np.testing.assert_allclose([s for _, s in found], scores[expected], rtol=1e-5)
        assert [c for c, _ in found] == [ids[j] for j in expected]  # equal scores: corpus order on both sides
    assert all(score == 0.0 for _, score in top["q3"])  # stopwords only: nothing matches


def test_statistics_are_the_only_corpus_wide_state():
    stats = bm25_statistics([["alpha beta", "beta"], ["gamma the"]])
    assert (stats.n_documents, stats.total_length) == (3, 4)
    assert stats.document_frequency == {"alpha": 1, "beta": 2, "gamma": 1}
