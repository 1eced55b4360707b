"""What the report must say first: how many queried facts the model knows, and a warning when few.

Attribution explains a prediction; when the model does not predict the fact, TrackStar's ranking
of its "proponents" measures noise (issue 11: 0% recall gave MRR 0.031). So every headline
(report.md, the Dagster metadata, `trackstar run`) leads with the fact recall, warns below
LOW_RECALL, and repeats the metrics for the queries the model gets right.
"""

from __future__ import annotations

from typing import Any, Mapping

LOW_RECALL = 0.2
"""Below this fact recall the headline warns that attribution mostly measures noise."""
CORRECT = "correct"
"""The by_correct split's label for queries the model completes greedily (evaluate.py)."""


def recall_line(summary: Mapping[str, Any]) -> str:
    """'Fact recall: 0.620 (124 of 200 evaluated queries completed greedily by the model; 0.604 of all 500
    queries)', the second part when a sample of the queries was evaluated; or why recall is unknown."""
    recall = summary.get("fact_recall")
    if recall is None:
        return "Fact recall: unknown (no model to ask); metrics cover every query."
    correct = correct_query_count(summary)
    counted = f" ({correct} of {summary.get('n_queries')} evaluated queries completed greedily by the model" \
        if correct is not None else ""
    everything, total = summary.get("fact_recall_all_queries"), summary.get("n_queries_total")
    if counted and everything is not None and total and total != summary.get("n_queries"):
        counted += f"; {everything:.3f} of all {total} queries"
    return f"Fact recall: {recall:.3f}{counted + ')' if counted else ''}."


def recall_warning(fact_recall: float | None) -> str | None:
    """The low-recall warning, or None when the model knows enough of the queried facts (or recall is unknown)."""
    if fact_recall is None or fact_recall >= LOW_RECALL:
        return None
    return (f"WARNING: the model completes only {fact_recall:.1%} of the queried facts (below {LOW_RECALL:.0%}). "
            "Attribution of facts the model does not know measures noise, not what taught it; pretrain longer "
            "(training.time_budget_s, training.epochs) or bring a model that knows these facts.")


def correct_query_count(summary: Mapping[str, Any], setting: str = "open_set") -> int | None:
    """How many evaluated queries the model gets right (None without the correctness split)."""
    groups = _by_correct(summary, setting)
    if groups is None:
        return None
    any_method = next(iter(groups.values()), {})
    return int(any_method.get(CORRECT, {}).get("n_queries", 0))


def correct_only_summary(summary: Mapping[str, Any], setting: str = "open_set") -> dict[str, Any] | None:
    """A summary-shaped dict whose `setting` table holds each method's metrics over the queries the model gets right."""
    groups = _by_correct(summary, setting)
    if not groups or not correct_query_count(summary, setting):
        return None
    table = {method: dict(per_group[CORRECT]) for method, per_group in groups.items() if CORRECT in per_group}
    return {"methods": summary.get("methods", list(table)), setting: table}


def _by_correct(summary: Mapping[str, Any], setting: str) -> Mapping[str, Mapping[str, Any]] | None:
    return summary.get("splits", {}).get(setting, {}).get("by_correct")
