"""Closed-set candidates: ground truth + BM25 top n + same-completion + random, no repeats, seeded."""

import numpy as np
import polars as pl

from trackstar_pipeline.evaluation.closed_set import build_candidate_sets, rank_candidates
from trackstar_pipeline.evaluation.scorers import matrix_scorer


def _world():
    rows = []
    for i in range(40):
        city = "Paris" if i % 4 == 0 else "Rome"
        facts = [[f"P{i}", "lives_in", city]] if i < 30 else []
        rows.append({"id": f"c{i:02d}", "text": f"P{i} lives in {city}." if i < 30 else f"filler {i} Paris",
                     "facts": facts})
    corpus = pl.DataFrame(rows, schema={"id": pl.String, "text": pl.String, "facts": pl.List(pl.List(pl.String))})
    queries = pl.DataFrame(
        {"id": ["qa", "qb"], "prompt": ["P0 lives in", "Who"], "completion": [" Paris", " Paris"],
         "fact": [["P0", "lives_in", "Paris"], None]},
        schema={"id": pl.String, "prompt": pl.String, "completion": pl.String, "fact": pl.List(pl.String)},
    )
    return corpus, queries


def test_candidate_sets_are_the_union_in_order_without_repeats():
    corpus, queries = _world()
    ground_truth = {"qa": ["c00"], "qb": []}
    bm25_top = {"qa": [("c00", 9.0), ("c01", 5.0), ("c02", 4.0), ("c03", 1.0)], "qb": [("c39", 1.0)]}
    sets = build_candidate_sets(corpus, queries, ground_truth, bm25_top, n_bm25=3, n_same_completion=4,
                                n_random=5, seed=7)
    qa = sets["qa"]
    assert qa[:3] == ["c00", "c01", "c02"]  # ground truth, then BM25 top 3 (c00 not repeated)
    same = qa[3:7]
    paris_by_fact = {f"c{i:02d}" for i in range(0, 30, 4)}
    assert len(same) == 4 and set(same) <= paris_by_fact - {"c00"}
    assert len(qa) == 3 + 4 + 5 and len(set(qa)) == len(qa)
    # a query without a fact falls back to the completion text; filler rows mention Paris
    qb_same = sets["qb"][1:5]
    assert all(" Paris" in f" {corpus.filter(corpus['id'] == c)['text'][0]}" for c in qb_same)
    # seeded per query: the same set when evaluated alone or with another seed it changes
    alone = build_candidate_sets(corpus, queries.head(1), ground_truth, bm25_top, 3, 4, 5, seed=7)
    assert alone["qa"] == qa
    other = build_candidate_sets(corpus, queries.head(1), ground_truth, bm25_top, 3, 4, 5, seed=8)
    assert other["qa"][:3] == qa[:3] and other["qa"] != qa


def test_small_pools_give_everything_available():
    corpus, queries = _world()
    sets = build_candidate_sets(corpus, queries.head(1), {"qa": ["c00"]}, {"qa": []}, 100, 100, 100)
    assert sorted(sets["qa"]) == sorted(corpus["id"].to_list())


def test_rank_candidates_orders_by_the_methods_scores():
    ids = [f"c{i}" for i in range(5)]
    scorer = matrix_scorer(["q"], ids, np.array([[0.0, 5.0, 1.0, 3.0, 2.0]]))
    assert rank_candidates(scorer, {"q": ["c0", "c2", "c3"]}, k=2) == {"q": [("c3", 3.0), ("c2", 1.0)]}
    assert rank_candidates(scorer, {}, k=2) == {"q": []}
