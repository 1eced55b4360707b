"""The report leads with fact recall, warns when it is low, and restates metrics for correct queries."""

from __future__ import annotations

from trackstar_pipeline.evaluation.recall_summary import (
    correct_only_summary,
    correct_query_count,
    recall_line,
    recall_warning,
)
from trackstar_pipeline.evaluation.report import headline_table, report_markdown


def _summary(recall: float | None, correct: int, incorrect: int) -> dict:
    by_correct = {
        "trackstar": {"correct": {"mrr": 0.9, "recall@10": 1.0, "n_queries": correct},
                      "incorrect": {"mrr": 0.1, "recall@10": 0.2, "n_queries": incorrect}},
        "bm25": {"correct": {"mrr": 0.5, "recall@10": 0.7, "n_queries": correct},
                 "incorrect": {"mrr": 0.4, "recall@10": 0.6, "n_queries": incorrect}},
    }
    return {"n_queries": correct + incorrect, "n_queries_total": correct + incorrect, "n_corpus": 50,
            "fact_recall": recall, "methods": ["trackstar", "bm25"], "settings": {},
            "open_set": {"trackstar": {"mrr": 0.3, "recall@10": 0.4}, "bm25": {"mrr": 0.45, "recall@10": 0.65}},
            "splits": {"open_set": {"by_correct": by_correct}}}


def test_low_recall_warns_and_enough_recall_does_not() -> None:
    assert "measures noise" in recall_warning(0.15)
    assert recall_warning(0.2) is None and recall_warning(0.8) is None and recall_warning(None) is None


def test_headline_leads_with_recall_and_the_warning_below_the_threshold() -> None:
    low = headline_table(_summary(0.1, correct=1, incorrect=9))
    assert low.startswith("Fact recall: 0.100 (1 of 10 evaluated queries")
    assert "WARNING" in low.split("| method |")[0]
    assert "WARNING" not in headline_table(_summary(0.5, correct=5, incorrect=5))


def test_correct_queries_get_their_own_table() -> None:
    summary = _summary(0.5, correct=5, incorrect=5)
    assert correct_query_count(summary) == 5
    assert correct_only_summary(summary)["open_set"]["trackstar"]["mrr"] == 0.9
    headline = headline_table(summary)
    all_part, correct_part = headline.split("Queries the model gets right:")
    assert "| trackstar | 0.300 | 0.400 |" in all_part and "| trackstar | 0.900 | 1.000 |" in correct_part
    markdown = report_markdown(summary)
    assert markdown.index("Fact recall") < markdown.index("## Open set")
    assert "| trackstar | 0.900 | 1.000 |" in markdown.split("## Open set, queries the model gets right")[1]


def test_without_a_model_recall_is_unknown_and_no_correct_table() -> None:
    summary = _summary(None, correct=0, incorrect=10)
    summary["splits"] = {}
    assert recall_line(summary).startswith("Fact recall: unknown")
    assert correct_only_summary(summary) is None
    assert "no query the model gets right" in headline_table(summary)


def test_the_recall_line_counts_the_evaluated_queries_and_adds_all_queries_when_a_sample_was_evaluated() -> None:
    summary = _summary(0.475, correct=95, incorrect=105)
    assert recall_line(summary) == "Fact recall: 0.475 (95 of 200 evaluated queries completed greedily by the model)."
    summary.update(n_queries_total=500, fact_recall_all_queries=0.512)
    assert recall_line(summary) == ("Fact recall: 0.475 (95 of 200 evaluated queries completed greedily by the model; "
                                    "0.512 of all 500 queries).")
