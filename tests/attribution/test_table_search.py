"""Table search against a brute-force reference: batched exact top-k, one-pass closed-set scoring, id lookups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackstar_pipeline.storage.vector_table import duplicate_ids, table_rows
from trackstar_pipeline.attribution import table_search
from trackstar_pipeline.attribution.table_search import (
    TableCandidateScores,
    exact_top_k,
    rows_with_ids,
    score_candidate_sets,
    search_table,
)
from trackstar_pipeline.evaluation.closed_set import rank_candidates
from trackstar_pipeline.evaluation.scorers import FusionScorer, PrecomputedScorer
from trackstar_pipeline.resources import VectorStore
from trackstar_pipeline.settings import SearchSettings

ROWS, DIM = 230, 24


@pytest.fixture()
def table(tmp_path):
    """230 random rows written in three fragments (three adds), as shards arrive."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)  # (N, d)
    store = VectorStore(uri=str(tmp_path / "lancedb"))
    for start, stop in [(0, 100), (100, 180), (180, ROWS)]:
        rows = table_rows([f"e{i}" for i in range(start, stop)], f"s{start}", [f"text {i}" for i in range(start, stop)],
                          vectors[start:stop])
        store.open_or_create_table(rows.schema)[0].add(rows)
    return store.open_table()


def _stored(table) -> torch.Tensor:
    """The table's vectors as stored (float16), row i = e{i}: the brute-force reference's input."""
    data = table.to_arrow()
    order = np.argsort([int(i[1:]) for i in data["example_id"].to_pylist()])
    flat = np.asarray(data["vector"].combine_chunks().flatten(), dtype=np.float32)
    return torch.from_numpy(flat.reshape(-1, DIM)[order])  # (N, d)


def _count_passes(monkeypatch) -> list[int]:
    """Counts streamed passes over the table (calls of table_batches) and checks each batch's size bound."""
    passes: list[int] = []
    original = table_search.table_batches

    def counting(table, columns, batch_rows, where=None):
        passes.append(batch_rows)
        for batch in original(table, columns, batch_rows, where):
            assert batch.num_rows <= batch_rows
            yield batch

    monkeypatch.setattr(table_search, "table_batches", counting)
    return passes


@pytest.mark.parametrize("batch_rows,query_block", [(7, 2), (64, 1024), (10_000, 3)])
def test_exact_search_equals_brute_force_and_streams_once_per_query_block(table, monkeypatch, batch_rows, query_block):
    queries = torch.randn(5, DIM, generator=torch.Generator().manual_seed(1))  # (Q, d)
    passes = _count_passes(monkeypatch)
    found = exact_top_k(table, queries, 6, SearchSettings(batch_rows=batch_rows, query_block=query_block))
    values, positions = (queries @ _stored(table).T).topk(6, dim=1)  # (Q, 6)
    for q in range(5):
        assert [i for i, _ in found[q]] == [f"e{p}" for p in positions[q].tolist()]
        assert torch.allclose(torch.tensor([s for _, s in found[q]]), values[q], atol=1e-5)
    assert len(passes) == -(-5 // query_block)


def test_search_table_returns_ids_scores_and_texts_in_descending_order(table):
    vectors = _stored(table)
    hits = search_table(table, vectors[[41, 200]].numpy(), k=3, search=SearchSettings(batch_rows=50), with_text=True)
    assert [h[0]["id"] for h in hits] == ["e41", "e200"] and hits[1][0]["text"] == "text 200"
    assert all(h[0]["score"] >= h[1]["score"] >= h[2]["score"] for h in hits)
    with pytest.raises(ValueError, match="k must be positive"):
        search_table(table, vectors[:1].numpy(), k=0)


def test_candidate_scores_equal_brute_force_in_one_pass_for_every_method_that_asks(table, monkeypatch):
    queries = {f"q{i}": np.random.default_rng(i).standard_normal(DIM).astype(np.float32) for i in range(3)}
    candidates = {"q0": ["e5", "e199", "e100"], "q1": ["e100", "e7"], "q2": ["e229"]}
    reference = _stored(table)
    passes = _count_passes(monkeypatch)
    scores = TableCandidateScores(table, queries, SearchSettings(batch_rows=16))
    trackstar = PrecomputedScorer({q: [] for q in queries}, candidates=scores)
    fused = FusionScorer([trackstar, trackstar])
    for scorer in (trackstar, fused):
        rank_candidates(scorer, candidates, k=10)
    assert len(passes) == 1  # one pass scored every (query, candidate) pair; the fusion reused it
    for q, ids in candidates.items():
        expected = reference[[int(i[1:]) for i in ids]] @ torch.from_numpy(queries[q])  # (C,)
        assert np.allclose(scores(q, ids), expected.numpy(), atol=1e-5)
    assert len(passes) == 1


def test_a_candidate_missing_from_the_table_is_named(table):
    with pytest.raises(KeyError, match="e999"):
        score_candidate_sets(table, {"q": np.ones(DIM, np.float32)}, {"q": ["e1", "e999"]})


def test_rows_with_ids_filters_in_chunks_and_duplicates_are_found_among_the_given_ids_only(table, monkeypatch):
    monkeypatch.setattr(table_search, "ID_FILTER_CHUNK", 2)
    found = rows_with_ids(table, ["e3", "e150", "e3", "e229", "nope"], ["example_id", "shard"])
    assert sorted(found["example_id"].to_pylist()) == ["e150", "e229", "e3"]
    extra = table_rows(["e3", "e4"], "again", ["x", "y"], np.zeros((2, DIM), np.float32))
    table.add(extra)
    assert duplicate_ids(table, ["e1", "e3", "quote'd"]) == ["e3"]  # e4 is duplicated too, but not asked about
