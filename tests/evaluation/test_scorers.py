"""Scorers: BM25 ranks the fact-stating passage first; matrix, random and fusion rank by the rules."""

import numpy as np
import polars as pl
import pytest

from trackstar_pipeline.evaluation.bm25 import bm25_scorer, query_texts
from trackstar_pipeline.evaluation.scorers import FusionScorer, fusion_scores, matrix_scorer, random_scorer

CORPUS_IDS = ["c0", "c1", "c2", "c3"]
CORPUS_TEXTS = ["Alice Smith lives in Paris.", "Bob Jones lives in Rome.", "The cat sat on a mat.",
                "Alice Smith plays the violin."]


def test_bm25_finds_the_passage_stating_the_fact_and_scores_candidates_consistently():
    scorer = bm25_scorer(CORPUS_IDS, CORPUS_TEXTS, ["q0", "q1"],
                         query_texts(["Alice Smith lives in", "the a of"], [" Paris", " on"]))
    top = scorer.top_k(2)
    assert top["q0"][0][0] == "c0" and top["q0"][1][0] == "c3"
    assert top["q0"][0][1] > top["q0"][1][1] > 0
    # stopword-only query: all zeros, ties in corpus order
    assert [score for _, score in scorer.top_k(4)["q1"]] == [0.0] * 4
    assert [corpus_id for corpus_id, _ in scorer.top_k(4)["q1"]] == CORPUS_IDS
    candidate_scores = scorer.score_candidates("q0", ["c3", "c0"])
    assert candidate_scores[1] == pytest.approx(top["q0"][0][1])
    with pytest.raises(KeyError, match="not a corpus id"):
        scorer.score_candidates("q0", ["nope"])


def test_matrix_top_k_is_descending_with_stable_ties():
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [1.0, 0.0, 0.0, 0.0]])
    scorer = matrix_scorer(["q0", "q1"], CORPUS_IDS, scores)
    assert scorer.top_k(3)["q0"] == [("c3", 0.9), ("c1", 0.5), ("c2", 0.5)]
    assert scorer.top_k(10)["q1"][0] == ("c0", 1.0) and len(scorer.top_k(10)["q1"]) == 4
    with pytest.raises(ValueError, match="expected \\(2 queries, 3 corpus rows\\)"):
        matrix_scorer(["q0", "q1"], CORPUS_IDS[:3], scores)


def test_random_scores_depend_on_seed_and_query_id_only():
    a = random_scorer(["q0", "q1"], CORPUS_IDS, seed=3)
    b = random_scorer(["q1"], CORPUS_IDS, seed=3)
    assert np.array_equal(a.row("q1"), b.row("q1"))
    assert not np.array_equal(a.row("q0"), a.row("q1"))
    assert not np.array_equal(random_scorer(["q1"], CORPUS_IDS, seed=4).row("q1"), b.row("q1"))


def test_reciprocal_rank_fusion_by_hand():
    first = matrix_scorer(["q"], CORPUS_IDS, np.array([[4.0, 3.0, 2.0, 1.0]]))   # ranks c0 c1 c2 c3
    second = matrix_scorer(["q"], CORPUS_IDS, np.array([[1.0, 2.0, 4.0, 3.0]]))  # ranks c2 c3 c1 c0
    fused = FusionScorer([first, second], rrf_k=0)
    expected = {"c0": 1 + 1 / 4, "c1": 1 / 2 + 1 / 3, "c2": 1 / 3 + 1, "c3": 1 / 4 + 1 / 2}
    top = fused.top_k(4)["q"]
    assert [corpus_id for corpus_id, _ in top] == ["c2", "c0", "c1", "c3"]
    assert dict(top) == pytest.approx(expected)
    # closed set: ranks are recomputed within the candidates
    assert fused.score_candidates("q", ["c1", "c3"]).tolist() == pytest.approx([1 + 1 / 2, 1 / 2 + 1])


def test_fusion_covers_the_queries_every_method_scores_or_the_ones_asked_for():
    wide = matrix_scorer(["q", "extra"], CORPUS_IDS, np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]]))
    narrow = matrix_scorer(["q"], CORPUS_IDS, np.array([[1.0, 2.0, 4.0, 3.0]]))
    fused = FusionScorer([wide, narrow], rrf_k=0)
    assert fused.query_ids == ["q"]
    assert [corpus_id for corpus_id, _ in fused.top_k(4)["q"]] == ["c2", "c0", "c1", "c3"]
    assert list(FusionScorer([wide, narrow], query_ids=["q"]).top_k(2)) == ["q"]
    with pytest.raises(ValueError, match="'extra'"):
        FusionScorer([wide, narrow], query_ids=["q", "extra"])


def test_weighted_fusion_led_by_one_methods_head_by_hand():
    bm25 = matrix_scorer(["q"], CORPUS_IDS, np.array([[4.0, 3.0, 2.0, 1.0]]))       # ranks c0 c1 c2 c3
    trackstar = matrix_scorer(["q"], CORPUS_IDS, np.array([[1.0, 4.0, 2.0, 3.0]]))  # ranks c1 c3 c2 c0
    plain = FusionScorer([trackstar, bm25], rrf_k=0, weights=[1.0, 0.5])
    expected = {"c0": 1 / 4 + 0.5, "c1": 1 + 0.5 / 2, "c2": 1 / 3 + 0.5 / 3, "c3": 1 / 2 + 0.5 / 4}
    assert dict(plain.top_k(4)["q"]) == pytest.approx(expected)
    assert [c for c, _ in plain.top_k(4)["q"]] == ["c1", "c0", "c3", "c2"]
    # BM25's first place leads although c1 has the larger fused score; the rest keep the fused order
    led = FusionScorer([trackstar, bm25], rrf_k=0, weights=[1.0, 0.5], head_method=1, head=1)
    assert [c for c, _ in led.top_k(4)["q"]] == ["c0", "c1", "c3", "c2"]
    # the closed set applies the same rule within the candidates: c1 is BM25's best of these three
    scores = led.score_candidates("q", ["c3", "c2", "c1"])
    assert int(np.argmax(scores)) == 2 and scores[0] > scores[1]
    # on all ids the closed set orders exactly as the open set does
    all_scores = led.score_candidates("q", CORPUS_IDS)
    assert [CORPUS_IDS[i] for i in np.argsort(-all_scores, kind="stable")] == ["c0", "c1", "c3", "c2"]


def test_bm25s_near_tie_leads_right_after_its_head_and_only_when_near():
    lists = [["a", "b", "c"], ["x", "y", "c", "a", "b"]]
    near = fusion_scores(lists, [0.5, 1.0], rrf_k=60, head=1, head_scores=[10.0, 9.5, 3.0], near_tie=0.9)
    assert sorted(near, key=lambda c: -near[c])[:3] == ["a", "b", "c"]  # b scores 0.95 of a: it leads second
    far = fusion_scores(lists, [0.5, 1.0], rrf_k=60, head=1, head_scores=[10.0, 8.0, 3.0], near_tie=0.9)
    assert sorted(far, key=lambda c: -far[c])[:3] == ["a", "c", "b"]  # 0.8 of a: fused as before
    assert far == fusion_scores(lists, [0.5, 1.0], rrf_k=60, head=1)
    # the near row is the best one the head left out: with the head picked from a pool, it may be BM25's first
    pooled = fusion_scores([["a", "b", "c"], ["b", "x"]], [0.5, 1.0], rrf_k=60, head=1, head_pool=2,
                           head_scores=[10.0, 9.5, 9.4], near_tie=0.9)
    assert sorted(pooled, key=lambda c: -pooled[c])[:2] == ["b", "a"]
    # no head, nothing to join
    assert fusion_scores(lists, [0.5, 1.0], rrf_k=60, head_scores=[10.0, 9.5, 3.0], near_tie=0.9) == \
        fusion_scores(lists, [0.5, 1.0], rrf_k=60)
    with pytest.raises(ValueError, match="near_tie needs the first method's scores"):
        fusion_scores(lists, [0.5, 1.0], rrf_k=60, head=1, near_tie=0.9)
    with pytest.raises(ValueError, match="near_tie 1.5 is not between 0 and 1"):
        fusion_scores(lists, [0.5, 1.0], rrf_k=60, head=1, head_scores=[1.0], near_tie=1.5)


def test_fusion_head_keeps_the_leading_methods_order_and_rejects_bad_arguments():
    totals = fusion_scores([["a", "b", "c"], ["c", "b", "a"]], [1.0, 1.0], rrf_k=0, head=2)
    assert sorted(totals, key=lambda c: -totals[c]) == ["a", "b", "c"]
    assert totals["c"] == pytest.approx(1 + 1 / 3)
    with pytest.raises(ValueError, match="2 weights for 3 methods"):
        fusion_scores([["a"], ["b"], ["c"]], [1.0, 1.0], rrf_k=60)
    one = matrix_scorer(["q"], CORPUS_IDS, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="head_method 2"):
        FusionScorer([one, one], head_method=2)
    with pytest.raises(ValueError, match="head_pool 1 is smaller than head 2"):
        fusion_scores([["a", "b"], ["b", "a"]], [1.0, 1.0], rrf_k=0, head=2, head_pool=1)


def test_fusion_head_is_picked_from_the_pool_in_the_other_methods_order():
    bm25 = ["a", "b", "c", "d"]
    trackstar = ["x", "c", "y", "b", "a"]
    # pool 3: of BM25's a, b, c TrackStar ranks c best, so c leads; then the fused order
    totals = fusion_scores([bm25, trackstar], [0.0, 1.0], rrf_k=0, head=1, head_pool=3)
    assert sorted(totals, key=lambda c: -totals[c])[:4] == ["c", "x", "y", "b"]
    # pool 1 is the plain head; a pool none of whose rows TrackStar ranks keeps BM25's order
    assert max(fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, head_pool=1).items(), key=lambda i: i[1])[0] == "a"
    unknown = fusion_scores([["p", "q", "r"], trackstar], [0.0, 1.0], 0, head=1, head_pool=3)
    assert max(unknown.items(), key=lambda item: item[1])[0] == "p"
    # head 2 of pool 4: TrackStar's order of BM25's top 4 is c, b, a, d: c then b lead
    led = fusion_scores([bm25, trackstar], [0.5, 1.0], 0, head=2, head_pool=4)
    assert sorted(led, key=lambda c: -led[c])[:3] == ["c", "b", "x"]


def test_fusion_head_pool_ratio_keeps_only_near_ties_of_the_first_row():
    bm25 = ["a", "b", "c", "d"]
    trackstar = ["x", "c", "y", "b", "a"]
    # c scores 0.8 of a's 10, b 0.95: at ratio 0.9 only a and b are in the pool, and TrackStar prefers b
    scores = [10.0, 9.5, 8.0, 7.0]
    totals = fusion_scores([bm25, trackstar], [0.0, 1.0], rrf_k=0, head=1, head_pool=4, head_scores=scores,
                           head_pool_ratio=0.9)
    assert max(totals.items(), key=lambda item: item[1])[0] == "b"
    # ratio 0.75 lets c in (TrackStar's favourite of the pool); ratio 0 is the plain pool
    for ratio in (0.75, 0.0):
        led = fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, head_pool=4, head_scores=scores,
                            head_pool_ratio=ratio)
        assert max(led.items(), key=lambda item: item[1])[0] == "c"
    # a first row alone within the ratio leads, whatever TrackStar thinks of it
    alone = fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, head_pool=4, head_scores=[10.0, 5.0, 4.0, 3.0],
                          head_pool_ratio=0.9)
    assert max(alone.items(), key=lambda item: item[1])[0] == "a"
    with pytest.raises(ValueError, match="needs the first method's scores"):
        fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, head_pool=4, head_pool_ratio=0.9)
    with pytest.raises(ValueError, match="head_pool_ratio 1.5 is not between 0 and 1"):
        fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, head_pool=4, head_scores=scores, head_pool_ratio=1.5)


def test_fusion_scorer_applies_the_ratio_to_the_head_methods_scores_in_open_and_closed_set():
    bm25 = matrix_scorer(["q"], CORPUS_IDS, np.array([[10.0, 9.5, 8.0, 1.0]]))     # ranks c0 c1 c2 c3
    trackstar = matrix_scorer(["q"], CORPUS_IDS, np.array([[1.0, 3.0, 4.0, 2.0]]))  # ranks c2 c1 c3 c0
    led = FusionScorer([trackstar, bm25], rrf_k=0, weights=[1.0, 0.0], head_method=1, head=1, head_pool=3,
                       head_pool_ratio=0.9)
    # pool c0, c1 (c2 is 0.8 of c0's score): TrackStar ranks c1 above c0, so c1 leads, then TrackStar's order
    assert [c for c, _ in led.top_k(4)["q"]] == ["c1", "c2", "c3", "c0"]
    assert [CORPUS_IDS[i] for i in np.argsort(-led.score_candidates("q", CORPUS_IDS), kind="stable")] == \
        ["c1", "c2", "c3", "c0"]
    # within candidates c0, c2 only, c2's 0.8 keeps it out of the pool: BM25's c0 leads
    assert int(np.argmax(led.score_candidates("q", ["c2", "c0"]))) == 1
    with pytest.raises(ValueError, match="head_pool_ratio -0.1"):
        FusionScorer([trackstar, bm25], head_method=1, head=1, head_pool=3, head_pool_ratio=-0.1)


def test_bm25_follow_rows_come_right_after_the_first_page_which_stays_as_it_was():
    bm25 = ["a", "b", "c", "d", "e"]
    trackstar = ["t1", "t2", "t3", "c", "t4", "t5", "t6"]
    plain = fusion_scores([bm25, trackstar], [0.0, 1.0], rrf_k=0, head=1)
    plain_order = sorted(plain, key=lambda c: -plain[c])
    assert plain_order[:4] == ["a", "t1", "t2", "t3"]
    followed = fusion_scores([bm25, trackstar], [0.0, 1.0], rrf_k=0, head=1, follow=4, page=4)
    order = sorted(followed, key=lambda c: -followed[c])
    # page a t1 t2 t3 unchanged; BM25's top 4 left out of it (b, c, d) follow in BM25's order, then the rest
    assert order == ["a", "t1", "t2", "t3", "b", "c", "d", "t4", "t5", "t6", "e"]
    assert all(followed[c] == plain[c] for c in ("a", "t1", "t2", "t3", "t4", "t5", "t6"))  # scores kept
    assert plain["t3"] > followed["b"] > followed["c"] > followed["d"] > plain["t4"]
    # follow rows already on the page move nothing; a page as long as the list moves nothing
    assert fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, follow=1, page=4) == plain
    assert fusion_scores([bm25, trackstar], [0.0, 1.0], 0, head=1, follow=5, page=20) == plain
    with pytest.raises(ValueError, match="follow -1 must be >= 0"):
        fusion_scores([bm25, trackstar], [0.0, 1.0], 0, follow=-1)


def test_follow_rows_keep_their_place_where_scores_tie_at_the_page_edge():
    # equal weights, rrf_k 0: a and x (each list's first) tie, so x, after page 1 (a), ties the page's last;
    # the rows after the page are lowered by a hair, and every score is strictly ordered
    totals = fusion_scores([["a", "b", "c"], ["x", "y", "z"]], [1.0, 1.0], rrf_k=0, follow=3, page=1)
    expected = ["a", "b", "c", "x", "y", "z"]
    assert all(totals[high] > totals[low] for high, low in zip(expected, expected[1:]))
    assert totals["a"] == 1.0 and totals["x"] == pytest.approx(1.0) and totals["y"] == pytest.approx(0.5)
    # the rows after the page keep their ties among themselves (both lists' thirds score 1/3)
    tied = fusion_scores([["a", "b", "c", "d"], ["x", "y", "z"]], [1.0, 1.0], rrf_k=0, follow=2, page=1)
    assert tied["c"] == tied["z"] and tied["x"] < tied["b"] < tied["a"]


def test_fusion_scorer_follow_applies_in_open_and_closed_set():
    bm25 = matrix_scorer(["q"], CORPUS_IDS, np.array([[4.0, 3.0, 2.0, 1.0]]))      # ranks c0 c1 c2 c3
    trackstar = matrix_scorer(["q"], CORPUS_IDS, np.array([[1.0, 2.0, 4.0, 3.0]]))  # ranks c2 c3 c1 c0
    led = FusionScorer([trackstar, bm25], rrf_k=0, weights=[1.0, 0.0], head_method=1, head=1, follow=2, page=2)
    # page: c0 (BM25's head), c2; BM25's c1 follows before TrackStar's c3
    assert [c for c, _ in led.top_k(4)["q"]] == ["c0", "c2", "c1", "c3"]
    assert [CORPUS_IDS[i] for i in np.argsort(-led.score_candidates("q", CORPUS_IDS), kind="stable")] == \
        ["c0", "c2", "c1", "c3"]
    with pytest.raises(ValueError, match="page 0 >= 1"):
        FusionScorer([trackstar, bm25], head_method=1, head=1, follow=2, page=0)
