"""Scores against exact cosine similarities of optimizer-corrected gradients; streaming top-k."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from attribution_helpers import (adamw, corpus_examples, exact_gradients, make_tokenizer, query_examples,
                                 saved_optimizer_state, tiny_llama)
from trackstar_pipeline.attribution.gradients import collect_gradients, hooked_modules
from trackstar_pipeline.attribution.optimizer_state import load_second_moments, module_dense
from trackstar_pipeline.attribution.scoring import prepare_vectors, top_k_proponents
from trackstar_pipeline.settings import AttributionSettings


def _score_matrix(query_vectors, train_vectors, train_ids, block: int = 3) -> torch.Tensor:
    """All scores via the streaming top-k with k = N, back in train-id order: (Q, N)."""
    blocks = [(train_ids[i:i + block], prepare_vectors(train_vectors[i:i + block], None, True))
              for i in range(0, len(train_ids), block)]
    ranked = top_k_proponents(prepare_vectors(query_vectors, None, True), blocks, k=len(train_ids))
    position = {example_id: i for i, example_id in enumerate(train_ids)}
    scores = torch.zeros(len(ranked), len(train_ids))
    for q, row in enumerate(ranked):
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
        for example_id, score in row:
            scores[q, position[example_id]] = score
    return scores


def test_scores_equal_exact_cosines_and_projection_keeps_their_order(tmp_path):
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    _, path = saved_optimizer_state(model, tokenizer, adamw, tmp_path)
    moments = load_second_moments(path, model)
    queries, corpus = query_examples(tokenizer), corpus_examples(tokenizer)
    train_ids = [example.example_id for example in corpus]
    exact_settings = AttributionSettings(projection_dim=0, curvature=False, optimizer_correction="exact")
    specs = hooked_modules(model, exact_settings)

    def corrected(examples):
        return torch.stack([torch.cat([(g / (module_dense(moments.get(s.parameter_name), s.transposed) + 1e-30).sqrt())
                                       .flatten() for g, s in zip(grads, specs)])
                            for grads in exact_gradients(model, examples, specs)])

    exact_q, exact_t = corrected(queries), corrected(corpus)
    cosines = torch.nn.functional.normalize(exact_q, dim=1) @ torch.nn.functional.normalize(exact_t, dim=1).T
    scores = _score_matrix(collect_gradients(model, queries, exact_settings, moments),
                           collect_gradients(model, corpus, exact_settings, moments), train_ids)
    assert torch.allclose(scores, cosines, atol=1e-5)

    projected = AttributionSettings(projection_dim=4096, curvature=False, optimizer_correction="exact")
    approx = _score_matrix(collect_gradients(model, queries, projected, moments),
                           collect_gradients(model, corpus, projected, moments), train_ids)
    assert spearmanr(approx.flatten(), cosines.flatten()).statistic >= 0.9


def test_top_k_streaming_matches_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    queries, train = torch.randn(4, 8, generator=generator), torch.randn(50, 8, generator=generator)
    ids = [f"t{i}" for i in range(50)]
    ranked = top_k_proponents(queries, [(ids[i:i + 7], train[i:i + 7]) for i in range(0, 50, 7)], k=5)
    full = queries @ train.T  # (4, 50)
    for q in range(4):
        values, positions = full[q].topk(5)
        assert [example_id for example_id, _ in ranked[q]] == [ids[p] for p in positions.tolist()]
        assert torch.allclose(torch.tensor([s for _, s in ranked[q]]), values)


def test_prepare_vectors_whitens_then_normalizes():
    vectors = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    inverse_sqrt = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    prepared = prepare_vectors(vectors, inverse_sqrt, unit_normalize=True)
    expected = vectors * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(prepared, expected / expected.norm(dim=1, keepdim=True))


def test_top_k_orders_equal_scores_by_stream_position_whatever_the_query_batch():
    """Duplicate rows tie exactly; a query alone and in a batch must get them in the same (stream) order."""
    generator = torch.Generator().manual_seed(1)
    rows = torch.randn(12, 8, generator=generator)  # (N, d)
    rows[7] = rows[2]  # a duplicate of row 2, in a later block
    rows[5] = rows[2]  # and one in the same block as row 7
    ids = [f"e{i}" for i in range(12)]
    query = rows[2:3] * 3.0  # (1, d): rows 2, 5 and 7 score highest, equally
    others = torch.randn(5, 8, generator=generator)  # (5, d)
    blocks = lambda: [(ids[start:start + 4], rows[start:start + 4]) for start in range(0, 12, 4)]
    alone = top_k_proponents(query, blocks(), 3)[0]
    batched = top_k_proponents(torch.cat([others, query]), blocks(), 3)[-1]
    assert [i for i, _ in alone] == ["e2", "e5", "e7"]
    # the same order; the scores only to float32 rounding (a 1-row and a 6-row matmul may round differently)
    assert [i for i, _ in batched] == [i for i, _ in alone]
    assert [score for _, score in batched] == pytest.approx([score for _, score in alone], rel=1e-6)
