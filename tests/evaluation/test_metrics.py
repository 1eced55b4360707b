"""Metric functions against hand-computed cases: ranks, ties, exclusions, recall denominators."""

import math

import pytest

from trackstar_pipeline.evaluation.metrics import (
    bucket_of,
    bucket_sort_key,
    mrr,
    pessimistic_order,
    ranking_metrics,
    recall_at_k,
    reciprocal_rank,
)


def test_reciprocal_rank_uses_scores_not_list_order():
    ranking = [("c", 0.7), ("a", 0.9), ("b", 0.8)]
    assert reciprocal_rank(ranking, {"b"}) == 0.5
    assert reciprocal_rank(ranking, {"c", "b"}) == 0.5
    assert reciprocal_rank(ranking, {"zz"}) == 0.0


def test_ties_are_ranked_pessimistically_and_deterministically():
    # a ground-truth proponent tied with a non-ground-truth one is ranked after it
    assert reciprocal_rank([("gt", 0.5), ("other", 0.5)], {"gt"}) == 0.5
    assert reciprocal_rank([("other", 0.5), ("gt", 0.5)], {"gt"}) == 0.5
    # a constant scorer gets the worst rank for its ground truth
    constant = [("gt", 0.0), ("x", 0.0), ("y", 0.0), ("z", 0.0)]
    assert reciprocal_rank(constant, {"gt"}) == 0.25
    # ties among non-relevant (or among relevant) ids keep the given order
    assert pessimistic_order([("b", 1.0), ("a", 1.0), ("g", 1.0)], {"g"}) == ["b", "a", "g"]
    assert pessimistic_order([("g2", 1.0), ("g1", 1.0), ("x", 2.0)], {"g1", "g2"}) == ["x", "g2", "g1"]


def test_nan_score_is_rejected_with_the_id():
    with pytest.raises(ValueError, match="'q7'"):
        reciprocal_rank([("q7", float("nan"))], {"q7"})


def test_mrr_excludes_and_counts_queries_without_ground_truth():
    rankings = {
        "q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)],  # first gt at rank 2
        "q2": [("a", 3.0), ("b", 2.0), ("c", 1.0)],  # no ground truth: excluded
        "q3": [("c", 3.0), ("b", 2.0)],  # gt at rank 1
        "q4": [("x", 1.0)],  # gt absent from the ranking: 0
    }
    ground_truth = {"q1": ["b", "c"], "q2": [], "q3": ["c"], "q4": ["y"]}
    result = mrr(rankings, ground_truth)
    assert result.n_queries == 3 and result.n_excluded == 1
    assert result.value == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # a query missing from the ground-truth mapping is excluded too
    assert mrr({"q9": [("a", 1.0)]}, {}).n_excluded == 1
    assert math.isnan(mrr({"q9": [("a", 1.0)]}, {}).value)
    assert mrr({"q9": [("a", 1.0)]}, {}).to_json() is None


def test_recall_denominator_is_min_of_k_and_ground_truth_count():
    ranking = [(f"d{i}", float(100 - i)) for i in range(20)]
    # 2 ground truth, 1 in the top 10: 1 / min(10, 2)
    assert recall_at_k({"q": ranking}, {"q": ["d3", "d15"]}, 10).value == 0.5
    # 12 ground truth, the top 10 are all ground truth: 10 / min(10, 12) = 1
    twelve = [f"d{i}" for i in range(12)]
    assert recall_at_k({"q": ranking}, {"q": twelve}, 10).value == 1.0
    # 12 ground truth, 5 of them in the top 10: 5 / 10
    spread = [f"d{i}" for i in range(0, 20, 2)] + ["missing1", "missing2"]
    assert recall_at_k({"q": ranking}, {"q": spread}, 10).value == 0.5
    # k=1 with a tie at the boundary: the non-ground-truth id takes the place
    assert recall_at_k({"q": [("g", 1.0), ("x", 1.0)]}, {"q": ["g"]}, 1).value == 0.0
    # averaging and exclusion
    both = recall_at_k({"q": ranking, "empty": ranking}, {"q": ["d0", "d19"], "empty": []}, 10)
    assert (both.value, both.n_queries, both.n_excluded) == (0.5, 1, 1)
    with pytest.raises(ValueError, match="at least 1"):
        recall_at_k({"q": ranking}, {"q": ["d0"]}, 0)


def test_frequency_buckets_follow_the_data_module_and_sort_by_lower_edge():
    assert [bucket_of(n) for n in (0, 1, 2, 3, 4, 40)] == ["0", "1", "2-3", "2-3", "4-7", "32+"]
    labels = ["32+", "4-7", "1", "0", "16-31", "2-3"]
    assert sorted(labels, key=bucket_sort_key) == ["0", "1", "2-3", "4-7", "16-31", "32+"]


def test_ranking_metrics_as_json():
    result = ranking_metrics({"q": [("a", 2.0), ("b", 1.0)], "none": [("a", 1.0)]}, {"q": ["b"]}, (1, 10))
    assert result == {"mrr": 0.5, "recall@1": 0.0, "recall@10": 1.0,
                      "n_queries_with_ground_truth": 1, "n_queries_without_ground_truth": 1}
