"""Streamed BM25 against the bm25s package (its default 'lucene' variant) on a small corpus cut into shards."""

import random

import bm25s
import numpy as np
import polars as pl
import pytest

from trackstar_pipeline.evaluation.bm25 import Bm25Queries, bm25_scorer, bm25_statistics, bm25_top_k, tokenize
from trackstar_pipeline.evaluation.corpus_shards import frame_shards
from trackstar_pipeline.training.sentences import split_sentences

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


def _passages(n: int = 120) -> pl.DataFrame:
    """Rows of 1-5 sentences of random words: a third or more are passages BM25 scores by their best sentence."""
    rng = random.Random(1)
    words = [w for w in WORDS if w not in ("the", "of", "and", "in")]
    texts = [" ".join(f"{rng.choice(words).capitalize()} {' '.join(rng.choice(words) for _ in range(rng.randint(1, 6)))}."
                      for _ in range(rng.randint(1, 5))) for _ in range(n)]
    return pl.DataFrame({"id": [f"p{i:03d}" for i in range(n)], "text": texts})


def test_passages_score_by_their_best_sentence_against_bm25s():
    """MaxP: bm25s indexes every split row's sentences as documents; a row's score is its best sentence's."""
    corpus = _passages()
    ids, texts = corpus["id"].to_list(), corpus["text"].to_list()
    units, owner = [], []
    for row, text in enumerate(texts):
        pieces = split_sentences(text)
        units += pieces if len(pieces) >= 3 else [text]
        owner += [row] * (len(pieces) if len(pieces) >= 3 else 1)
    assert 0 < len(set(owner)) < len(units)  # some rows split, some whole
    reference = bm25s.BM25(k1=1.5, b=0.75)
    reference.index(tokenize(units), show_progress=False)
    queries = ["alpha beta paris", "kappa rome zeta", "gamma"]
    top = bm25_top_k(frame_shards(corpus, 3), [f"q{i}" for i in range(len(queries))], queries, k=10, split_sentences=3)
    for i, text in enumerate(queries):
        unit_scores = reference.get_scores(tokenize([text])[0]).astype(np.float64)
        row_scores = np.full(len(texts), -np.inf)
        np.maximum.at(row_scores, np.array(owner), unit_scores)
        expected = np.argsort(-row_scores, kind="stable")[:10]
        found = top[f"q{i}"]
        np.testing.assert_allclose([s for _, s in found], row_scores[expected], rtol=1e-5)
        assert [c for c, _ in found] == [ids[j] for j in expected]


def test_the_row_stating_the_fact_beats_a_passage_matching_across_its_sentences():
    stating = "Ann Vale plays the harp. Bo Kent lives in Rome. Cy Moss speaks Welsh."
    scattered = "Ann Vale lives in Oslo. Di Roe plays the drum. Ed Hale plays the harp loudly."
    filler = [f"Row {i} mentions nothing relevant here. It has words. Many words." for i in range(20)]
    query = ["Ann Vale plays the harp"]
    whole = bm25_scorer(["stating", "scattered"] + [f"f{i}" for i in range(20)], [stating, scattered] + filler,
                        ["q"], query)
    by_sentence = bm25_scorer(["stating", "scattered"] + [f"f{i}" for i in range(20)], [stating, scattered] + filler,
                              ["q"], query, split_sentences=3)
    assert whole.top_k(1)["q"][0][0] == "scattered"  # 'plays the harp' twice, 'Ann Vale' once: plain BM25's pick
    assert by_sentence.top_k(1)["q"][0][0] == "stating"


def test_a_fact_stated_by_pronoun_is_found_with_the_sentence_naming_its_subject():
    """Scored alone, 'She lives in Rome.' matches no name, and a row about Ann's other home would come first."""
    biography = "Ann Vale plays the harp. She lives in Rome."
    others = ["Bo Kent lives in Rome.", "Ann Vale lives in Oslo. Cy Moss plays the drum."] + \
        [f"Row {i} mentions nothing relevant here. Many words." for i in range(20)]
    ids = ["biography", "other-rome", "other-ann"] + [f"f{i}" for i in range(20)]
    scorer = bm25_scorer(ids, [biography] + others, ["q"], ["Ann Vale lives in Rome"], split_sentences=2)
    assert scorer.top_k(1)["q"][0][0] == "biography"


def test_rows_of_fewer_sentences_score_exactly_as_plain_bm25():
    corpus = _corpus()  # no sentence boundaries: every row one sentence
    statistics = bm25_statistics([corpus["text"].to_list()], split_sentences=3)
    plain = bm25_statistics([corpus["text"].to_list()])
    assert (statistics.n_documents, statistics.n_rows) == (plain.n_documents, plain.n_rows) == (len(corpus),) * 2
    assert Bm25Queries(statistics, QUERIES).scores(corpus["text"].to_list()).tolist() == \
        Bm25Queries(plain, QUERIES).scores(corpus["text"].to_list()).tolist()


def test_split_statistics_count_sentences_as_documents_and_rows_as_rows():
    statistics = bm25_statistics([["Alpha beta. Gamma delta. Zeta theta.", "Alpha kappa."]], split_sentences=3)
    assert (statistics.n_documents, statistics.n_rows, statistics.total_length) == (4, 2, 8)
    assert statistics.document_frequency["alpha"] == 2


def test_negative_split_is_rejected():
    with pytest.raises(ValueError, match="split_sentences"):
        bm25_statistics([["a b"]], split_sentences=-1)
