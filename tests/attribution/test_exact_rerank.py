"""The exact re-rank's alignments against full per-example gradients, its chunking and its ordering."""

from __future__ import annotations

import pytest
import torch

from attribution_helpers import (adafactor, adamw, corpus_examples, exact_gradients, make_tokenizer, query_examples,
                                 reference_second_moment, saved_optimizer_state, tiny_gpt2, tiny_llama)
from trackstar_pipeline.attribution.exact_rerank import (RerankMemoryError, chunk_sizes, exact_gradient_bytes,
                                                         reranked, update_alignments)
from trackstar_pipeline.attribution.gradients import hooked_modules
from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.settings import AttributionSettings

MiB = 2**20


def _reference(model, queries, corpus, pools, settings, state_dict) -> dict[str, dict[str, float]]:
    """cos(g_q, V^{-1/2} g_m) from one unpadded backward per example, V read straight from the optimizer state."""
    specs = hooked_modules(model, settings)
    query_grads = {e.example_id: torch.cat([g.flatten() for g in grads])
                   for e, grads in zip(queries, exact_gradients(model, queries, specs))}
    corrected = {}
    for example, grads in zip(corpus, exact_gradients(model, corpus, specs)):
        parts = []
        for spec, grad in zip(specs, grads):
            if state_dict is not None:
                grad = grad / (reference_second_moment(state_dict, model, spec) + settings.optimizer_epsilon).sqrt()
            parts.append(grad.flatten())
        corrected[example.example_id] = torch.cat(parts)
    return {q: {c: float(torch.nn.functional.cosine_similarity(query_grads[q], corrected[c], dim=0)) for c in ids}
            for q, ids in pools.items()}


def _setup(family: str, optimizer, tmp_path):
    tokenizer = make_tokenizer(family == "llama")
    model = (tiny_llama if family == "llama" else tiny_gpt2)(len(tokenizer))
    moments = state_dict = None
    if optimizer is not None:
        _, path = saved_optimizer_state(model, tokenizer, optimizer, tmp_path)
        state_dict = torch.load(path, weights_only=True)
        moments = load_second_moments(path, model)
    correction = "exact" if optimizer is adamw else "factored"
    settings = AttributionSettings(batch_size=3, optimizer_correction=correction, precision="float32")
    return tokenizer, model, moments, state_dict, settings


POOLS = {"q-short": ["c0", "c2", "c5"], "q-long": ["c6", "c2"], "q-mid": ["c3", "c0", "c1", "c7"], "q-one": [],
         "q-two": ["c4"]}


@pytest.mark.parametrize("family,optimizer", [("llama", adafactor), ("gpt2", adamw), ("llama", None)])
def test_alignments_equal_the_full_gradient_reference(family, optimizer, tmp_path):
    tokenizer, model, moments, state_dict, settings = _setup(family, optimizer, tmp_path)
    queries, corpus = query_examples(tokenizer), corpus_examples(tokenizer)
    by_id = {e.example_id: e for e in corpus}
    asked: list[list[str]] = []

    def examples(ids):
        asked.append(list(ids))
        return [by_id[i] for i in reversed(ids)]  # any order: matched by id

    got = update_alignments(model, {e.example_id: e for e in queries}, POOLS, examples, settings, moments, 64 * MiB)
    expected = _reference(model, queries, corpus, POOLS, settings, state_dict)
    assert set(got) == set(POOLS) and got["q-one"] == {}
    for query_id, ids in POOLS.items():
        assert sorted(got[query_id]) == sorted(ids)
        for corpus_id in ids:
            assert got[query_id][corpus_id] == pytest.approx(expected[query_id][corpus_id], abs=2e-5)
    assert sorted(c for batch in asked for c in batch) == sorted({c for ids in POOLS.values() for c in ids})


def test_the_query_side_is_not_corrected(tmp_path):
    """With V the alignment differs from V^{-1/2} on both sides (TrackStar's geometry) and from none."""
    tokenizer, model, moments, state_dict, settings = _setup("llama", adafactor, tmp_path)
    queries, corpus = query_examples(tokenizer), corpus_examples(tokenizer)
    by_id = {e.example_id: e for e in corpus}
    pools = {"q-mid": ["c0", "c1", "c3", "c7"]}
    corrected = update_alignments(model, {e.example_id: e for e in queries}, pools, lambda ids: [by_id[i] for i in ids],
                                  settings, moments, 64 * MiB)["q-mid"]
    raw = update_alignments(model, {e.example_id: e for e in queries}, pools, lambda ids: [by_id[i] for i in ids],
                            settings, None, 64 * MiB)["q-mid"]
    assert max(abs(corrected[c] - raw[c]) for c in pools["q-mid"]) > 1e-3


def test_small_budgets_chunk_and_give_the_same_alignments(tmp_path):
    tokenizer, model, moments, _, settings = _setup("llama", adafactor, tmp_path)
    queries, corpus = {e.example_id: e for e in query_examples(tokenizer)}, corpus_examples(tokenizer)
    by_id = {e.example_id: e for e in corpus}
    row = exact_gradient_bytes(model, settings)
    calls: list[tuple[int, int]] = []
    wide = update_alignments(model, queries, POOLS, lambda ids: [by_id[i] for i in ids], settings, moments, 64 * MiB)
    narrow = update_alignments(model, queries, POOLS, lambda ids: [by_id[i] for i in ids], settings, moments, 3 * row,
                               progress=lambda done, total: calls.append((done, total)))
    pairs = sum(len(ids) for ids in POOLS.values())
    assert calls[-1] == (pairs, pairs) and len(calls) == pairs  # one query and one candidate at a time
    for query_id in POOLS:
        assert narrow[query_id] == pytest.approx(wide[query_id], abs=1e-6)
    with pytest.raises(RerankMemoryError, match="rerank_memory_mb"):
        update_alignments(model, queries, POOLS, lambda ids: [by_id[i] for i in ids], settings, moments, 2 * row)


def test_chunk_sizes_split_the_budget():
    assert chunk_sizes(100, 100 * 256, 32, 500) == (192, 32)  # candidates and their backward a batch each
    assert chunk_sizes(100, 100 * 256, 32, 10) == (10, 32)  # never more queries than there are
    assert chunk_sizes(100, 100 * 8, 32, 500) == (4, 2)  # a quarter to candidates when the budget is small
    assert chunk_sizes(100, 300, 32, 5) == (1, 1)
    with pytest.raises(RerankMemoryError, match="fewer than 3"):
        chunk_sizes(100, 299, 32, 5)


def test_missing_queries_or_rows_are_named(tmp_path):
    tokenizer, model, moments, _, settings = _setup("llama", adafactor, tmp_path)
    queries = {e.example_id: e for e in query_examples(tokenizer)}
    with pytest.raises(KeyError, match="no tokenized query"):
        update_alignments(model, queries, {"q-nope": ["c0"]}, lambda ids: [], settings, moments, 64 * MiB)
    with pytest.raises(KeyError, match="not in the corpus"):
        update_alignments(model, queries, {"q-short": ["c0"]}, lambda ids: [], settings, moments, 64 * MiB)


def test_reranked_orders_the_pool_only():
    ranking = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.5)]
    got = reranked(ranking, {"a": 0.1, "b": 0.3, "c": 0.3}, pool=3)
    assert [c for c, _ in got] == ["b", "c", "a", "d", "e"]  # b and c tie: the projected order
    assert [s for _, s in got] == [0.3, 0.3, 0.1, -2.0, -3.0]
    assert reranked(ranking[:2], {"a": 0.0, "b": 1.0}, pool=5) == [("b", 1.0), ("a", 0.0)]
