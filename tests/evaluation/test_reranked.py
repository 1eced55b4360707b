"""ExactRerankScorer: a base ranking's pool re-ordered by a given alignment, open and closed set, each pair once."""

from __future__ import annotations

import numpy as np
import pytest

from trackstar_pipeline.evaluation.closed_set import rank_candidates
from trackstar_pipeline.evaluation.reranked import ExactRerankScorer, checked_rerank
from trackstar_pipeline.evaluation.scorers import FusionScorer, matrix_scorer

CORPUS = [f"c{i}" for i in range(8)]
QUERIES = ["q0", "q1"]
BASE = np.array([[8, 7, 6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6, 7, 8]], dtype=float)  # q0: c0 best; q1: c7 best
ALIGN = {"q0": {f"c{i}": i / 10 for i in range(8)}, "q1": {f"c{i}": -i / 10 for i in range(8)}}  # the reverse


class CountingAlign:
    """The exact alignment as a lookup, recording every pair it is asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, pools):
        self.asked += [(q, c) for q, ids in pools.items() for c in ids]
        return {q: {c: ALIGN[q][c] for c in ids} for q, ids in pools.items()}


def test_open_set_reorders_the_pool_and_keeps_the_rest():
    align = CountingAlign()
    scorer = ExactRerankScorer(matrix_scorer(QUERIES, CORPUS, BASE), pool=3, align=align)
    top = scorer.top_k(5)
    assert [c for c, _ in top["q0"]] == ["c2", "c1", "c0", "c3", "c4"]  # base c0 c1 c2 | c3 c4
    assert [c for c, _ in top["q1"]] == ["c5", "c6", "c7", "c4", "c3"]
    assert top["q0"][0][1] == pytest.approx(0.2) and top["q0"][3][1] < -1  # the rest below every cosine
    assert sorted(align.asked) == sorted([("q0", c) for c in ("c0", "c1", "c2")] + [("q1", c) for c in ("c5", "c6", "c7")])
    assert [c for c, _ in scorer.top_k(2)["q0"]] == ["c2", "c1"]  # k below the pool: still the whole pool re-ranked
    assert len(align.asked) == 6  # known pairs are not asked again


def test_closed_set_reranks_the_base_best_candidates_and_reuses_known_pairs():
    align = CountingAlign()
    scorer = ExactRerankScorer(matrix_scorer(QUERIES, CORPUS, BASE), pool=2, align=align)
    scorer.top_k(2)  # q0 knows c0, c1
    candidates = {"q0": ["c5", "c1", "c0", "c3"], "q1": ["c0", "c2", "c4"]}
    ranked = rank_candidates(scorer, candidates, 10)
    assert [c for c, _ in ranked["q0"]] == ["c1", "c0", "c3", "c5"]  # pool {c0, c1} by alignment, then base order
    assert [c for c, _ in ranked["q1"]] == ["c2", "c4", "c0"]  # pool {c4, c2}: c2 aligns better
    assert ("q0", "c1") in align.asked and align.asked.count(("q0", "c1")) == 1
    assert sorted(p for p in align.asked if p[0] == "q1" and p[1] in ("c2", "c4")) == [("q1", "c2"), ("q1", "c4")]


def test_a_fusion_of_the_reranked_method_follows_its_order():
    bm25 = matrix_scorer(QUERIES, CORPUS, np.array([[0, 0, 0, 0, 0, 0, 0, 9.0], [9.0, 0, 0, 0, 0, 0, 0, 0]]))
    fused = FusionScorer([ExactRerankScorer(matrix_scorer(QUERIES, CORPUS, BASE), 8, CountingAlign()), bm25],
                         weights=[1.0, 0.0], head_method=1, head=1)
    top = fused.top_k(4)
    assert [c for c, _ in top["q0"]] == ["c7", "c6", "c5", "c4"]  # BM25's head, then the exact order
    assert [c for c, _ in top["q1"]] == ["c0", "c1", "c2", "c3"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fusion_rerank -1"):
        checked_rerank(-1, 100)
    with pytest.raises(ValueError, match="rerank_memory_mb 0"):
        checked_rerank(10, 0)
    checked_rerank(0, 1)
    with pytest.raises(ValueError, match="pool 0"):
        ExactRerankScorer(matrix_scorer(QUERIES, CORPUS, BASE), 0, CountingAlign())
