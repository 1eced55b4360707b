"""Fact-tracing metrics: MRR and Recall@k of ranked proponents against ground-truth proponents.

Ties are ranked pessimistically: among candidates with equal scores, non-ground-truth ones come
first, so a method cannot gain from a constant or degenerate score (a method scoring every
candidate 0 gets the worst possible rank for its ground truth). Within ground truth (or within
non-ground-truth) the given order is kept (a stable sort), so results are deterministic.

Queries without ground-truth proponents have no defined rank; they are excluded from the mean and
counted in `n_excluded`, so a report can say how many queries a number rests on.
A ranking is a (possibly truncated) list of (corpus_id, score); a ground-truth proponent that is
not in the list contributes a reciprocal rank of 0 and is not recalled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Ranking = Sequence[tuple[str, float]]
"""One query's proponents as (corpus_id, score), any order; scores decide the rank."""

@dataclass(frozen=True)
class MeanMetric:
    """A metric averaged over the queries that define it, with how many were left out."""

    value: float
    """Mean over the used queries; NaN when no query could be used."""
    n_queries: int
    n_excluded: int

    def to_json(self) -> float | None:
        """JSON has no NaN: an undefined mean becomes null."""
        return None if math.isnan(self.value) else float(self.value)


def pessimistic_order(ranking: Ranking, relevant: set[str]) -> list[str]:
    """Ids by descending score; on equal scores non-relevant ids first, else the given order."""
    for corpus_id, score in ranking:
        if isinstance(score, float) and math.isnan(score):
            raise ValueError(f"proponent '{corpus_id}' has a NaN score; fix the scorer before ranking")
    indexed = sorted(
        range(len(ranking)),
        key=lambda i: (-float(ranking[i][1]), ranking[i][0] in relevant, i),
    )
    return [ranking[i][0] for i in indexed]


def reciprocal_rank(ranking: Ranking, relevant: set[str]) -> float:
    """1 / rank of the first relevant id under pessimistic ties; 0 when none is in the ranking."""
    for rank, corpus_id in enumerate(pessimistic_order(ranking, relevant), start=1):
        if corpus_id in relevant:
            return 1.0 / rank
    return 0.0


def recall_of_query(ranking: Ranking, relevant: set[str], k: int) -> float:
    """Relevant ids in the top k divided by min(k, number of relevant ids)."""
    if k < 1:
        raise ValueError(f"recall k must be at least 1, got {k}")
    top = pessimistic_order(ranking, relevant)[:k]
    hits = sum(1 for corpus_id in top if corpus_id in relevant)
    return hits / min(k, len(relevant))


def _mean_over_defined(
    rankings: Mapping[str, Ranking],
    ground_truth: Mapping[str, Sequence[str]],
    per_query: Callable[[Ranking, set[str]], float],
) -> MeanMetric:
    values, excluded = [], 0
    for query_id, ranking in rankings.items():
        relevant = set(ground_truth.get(query_id, ()))
        if not relevant:
            excluded += 1
            continue
        values.append(per_query(ranking, relevant))
    mean = sum(values) / len(values) if values else float("nan")
    return MeanMetric(mean, len(values), excluded)


def mrr(rankings: Mapping[str, Ranking], ground_truth: Mapping[str, Sequence[str]]) -> MeanMetric:
    """Mean reciprocal rank of the first ground-truth proponent, over queries that have one."""
    return _mean_over_defined(rankings, ground_truth, reciprocal_rank)


def recall_at_k(rankings: Mapping[str, Ranking], ground_truth: Mapping[str, Sequence[str]], k: int) -> MeanMetric:
    """Mean over queries with ground truth of (ground truth in top k) / min(k, n_ground_truth)."""
    return _mean_over_defined(rankings, ground_truth, lambda ranking, relevant: recall_of_query(ranking, relevant, k))


def bucket_of(n_ground_truth: int) -> str:
    """Fact-frequency bucket of a query by its ground-truth count (the data module's buckets)."""
    from trackstar_pipeline.data.fact_corpus import frequency_bucket

    return frequency_bucket(n_ground_truth)


def bucket_sort_key(label: str) -> tuple[int, str]:
    """Order bucket labels like '1', '2-3', '16-31', '32+' by their lower edge."""
    digits = "".join(ch for ch in label.split("-")[0] if ch.isdigit())
    return (int(digits) if digits else -1, label)


def group_queries(labels: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert query id -> group label into label -> query ids (insertion order kept)."""
    groups: dict[str, list[str]] = {}
    for query_id, label in labels.items():
        groups.setdefault(label, []).append(query_id)
    return groups


def ranking_metrics(
    rankings: Mapping[str, Ranking],
    ground_truth: Mapping[str, Sequence[str]],
    recall_ks: Sequence[int] = (10,),
) -> dict[str, float | int | None]:
    """MRR and Recall@k of one method as plain JSON data, with the query counts behind them."""
    reciprocal = mrr(rankings, ground_truth)
    result: dict[str, float | int | None] = {"mrr": reciprocal.to_json()}
    for k in recall_ks:
        result[f"recall@{k}"] = recall_at_k(rankings, ground_truth, k).to_json()
    result["n_queries_with_ground_truth"] = reciprocal.n_queries
    result["n_queries_without_ground_truth"] = reciprocal.n_excluded
    return result
