"""Curvature accumulation, the lambda mix (numeric and auto), the inverse square root, and storage."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from trackstar_pipeline.attribution.curvature import (CurvatureAccumulator, CurvatureTooLargeError, auto_lambda, scaled_auto_component,
                                                      curvature_inverse_sqrt, curvature_train_sample,
                                                      damped_spectrum, inverse_sqrt_from_gradients, load_curvature,
                                                      mix_curvature, save_curvature, BlockDiagonal,
                                                      curvature_block_sizes, damped_inverse_sqrt)
from attribution_helpers import corpus_examples, exact_gradients, make_tokenizer, query_examples, tiny_llama
from trackstar_pipeline.attribution.curvature import model_curvature_blocks
from trackstar_pipeline.attribution.gradients import collect_gradients, hooked_modules
from trackstar_pipeline.settings import AttributionSettings


def _matrix_with_eigenvalues(values: torch.Tensor, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return (q * values) @ q.T


def test_accumulator_streams_to_the_exact_second_moment():
    vectors = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    accumulator = CurvatureAccumulator(6)
    for block in vectors.split(7):
        accumulator.update(block)
    assert accumulator.count == 50
    expected = vectors.double().T @ vectors.double() / 50
    assert torch.allclose(accumulator.mean().to_dense(), expected, atol=1e-12)


def test_accumulator_keeps_the_diagonal_blocks_of_the_second_moment():
    vectors = torch.randn(30, 9, generator=torch.Generator().manual_seed(1))
    accumulator = CurvatureAccumulator((4, 2, 3))
    for block in vectors.split(8):
        accumulator.update(block)
    mean = accumulator.mean()
    full = vectors.double().T @ vectors.double() / 30  # (9, 9)
    assert mean.sizes == (4, 2, 3)
    for where, block in zip([slice(0, 4), slice(4, 6), slice(6, 9)], mean.blocks):
        assert torch.allclose(block, full[where, where], atol=1e-12)
    with pytest.raises(ValueError, match="same model and projection_dim"):
        accumulator.update(torch.randn(2, 8))


def test_inverse_sqrt_whitens_a_well_conditioned_r():
    r = _matrix_with_eigenvalues(torch.linspace(0.5, 4.0, 32, dtype=torch.float64), seed=1)
    inverse_sqrt = curvature_inverse_sqrt(r, damping=0.0).double()
    assert torch.allclose(inverse_sqrt @ r @ inverse_sqrt, torch.eye(32, dtype=torch.float64), atol=1e-5)
    damped = curvature_inverse_sqrt(r, damping=0.1).double()
    shift = 0.1 * float(torch.linalg.eigvalsh(r).mean())
    assert torch.allclose(damped @ (r + shift * torch.eye(32, dtype=torch.float64)) @ damped,
                          torch.eye(32, dtype=torch.float64), atol=1e-5)


def test_numeric_lambda_mixes_linearly():
    r_eval, r_train = torch.eye(3, dtype=torch.float64), 2 * torch.eye(3, dtype=torch.float64)
    mixed, used = mix_curvature(r_eval, r_train, 0.9)
    assert used == 0.9 and torch.allclose(mixed, (0.9 + 0.2) * torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="lambda"):
        mix_curvature(r_eval, r_train, 1.5)


def test_auto_lambda_makes_the_eigenvalue_curves_cross_at_the_component():
    e_eval = torch.logspace(2, -4, 40, dtype=torch.float64)  # steeper than train
    e_train = torch.logspace(0, -2, 40, dtype=torch.float64)
    r_eval, r_train = _matrix_with_eigenvalues(e_eval, 2), _matrix_with_eigenvalues(e_train, 3)
    mixed, used = mix_curvature(r_eval, r_train, "auto", auto_component=10)
    assert used * e_eval[10] == pytest.approx((1 - used) * e_train[10], rel=1e-6)
    assert used * e_eval[9] > (1 - used) * e_train[9] and used * e_eval[11] < (1 - used) * e_train[11]
    # component beyond the available rank is clipped to rank - 1
    low_rank = _matrix_with_eigenvalues(torch.cat([e_eval[:5], torch.zeros(35, dtype=torch.float64)]), 4)
    clipped = auto_lambda(low_rank, r_train, component=1000)
    assert clipped == pytest.approx(float(e_train[4] / (e_eval[4] + e_train[4])), rel=1e-6)


def test_auto_component_defaults_to_the_papers_fraction_of_d():
    assert scaled_auto_component(65536) == 1000
    assert scaled_auto_component(4096) == 62
    assert scaled_auto_component(16) == 1
    e_eval = torch.logspace(2, -4, 128, dtype=torch.float64)
    e_train = torch.logspace(0, -2, 128, dtype=torch.float64)
    r_eval, r_train = _matrix_with_eigenvalues(e_eval, 5), _matrix_with_eigenvalues(e_train, 6)
    _, used = mix_curvature(r_eval, r_train, "auto")  # d = 128 -> component 2
    assert used == pytest.approx(float(e_train[2] / (e_eval[2] + e_train[2])), rel=1e-6)
    assert used != pytest.approx(auto_lambda(r_eval, r_train, component=1000), rel=1e-3)


def test_save_and_load_round_trip(tmp_path):
    tensors = {"inverse_sqrt": torch.randn(4, 4), "r_train": torch.randn(4, 4, dtype=torch.float64)}
    save_curvature(tmp_path / "r.safetensors", tensors, {"lambda": "0.99", "count": 5})
    loaded, metadata = load_curvature(tmp_path / "r.safetensors")
    assert metadata == {"lambda": "0.99", "count": "5"}
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_refuses_a_dense_r_that_is_too_large():
    with pytest.raises(CurvatureTooLargeError, match="curvature_blocks: module.*--projection-dim.*--no-curvature"):
        CurvatureAccumulator(100_000)
    with pytest.raises(CurvatureTooLargeError, match="per-module block"):
        curvature_block_sizes([8192, 20000], "module")
    assert curvature_block_sizes([4096] * 16, "module") == (4096,) * 16
    with pytest.raises(CurvatureTooLargeError, match="dense"):
        curvature_block_sizes([4096] * 16, "dense")


def test_inverse_sqrt_from_gradients_samples_the_corpus_and_mixes_with_the_queries():
    generator = torch.Generator().manual_seed(5)
    corpus, queries = torch.randn(40, 6, generator=generator), torch.randn(9, 6, generator=generator)
    settings = AttributionSettings(projection_dim=6, lambda_mix=0.7, damping=0.01, curvature_train_samples=15,
                                   projection_seed=3)
    lines: list[str] = []
    inverse, used = inverse_sqrt_from_gradients(corpus, queries, replace(settings, curvature_blocks="dense"), lines.append)
    sample = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:15]
    r_train = corpus[sample].double().T @ corpus[sample].double() / 15
    r_eval = queries.double().T @ queries.double() / 9
    expected = curvature_inverse_sqrt(0.7 * r_eval + 0.3 * r_train, 0.01)
    assert used == 0.7 and torch.allclose(inverse, expected, atol=1e-5)
    assert lines == ["curvature from 15 corpus and 9 query gradients, lambda=0.7000"]
    assert inverse_sqrt_from_gradients(corpus, queries, replace(settings, curvature=False)) == (None, None)


def test_damped_spectrum_shows_what_the_damping_leaves():
    indefinite = _matrix_with_eigenvalues(torch.tensor([-1.0, 1.0, 2.0, 6.0], dtype=torch.float64), seed=6)
    asymmetry, minimum, condition = damped_spectrum(indefinite, 0.1)  # shift 0.1 * mean 2
    assert asymmetry < 1e-12 and minimum == pytest.approx(-0.8) and condition == float("inf")
    positive = _matrix_with_eigenvalues(torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64), seed=7)
    _, minimum, condition = damped_spectrum(positive, 0.1)  # shift 0.3
    assert minimum == pytest.approx(1.3) and condition == pytest.approx(6.3 / 1.3)


def test_curvature_train_sample_is_seeded_and_capped():
    sample = curvature_train_sample(50, 20, seed=4)
    assert torch.equal(sample, curvature_train_sample(50, 20, seed=4))
    assert len(set(sample.tolist())) == 20 and max(sample.tolist()) < 50
    assert sorted(curvature_train_sample(5, 20, seed=4).tolist()) == [0, 1, 2, 3, 4]


def _random_second_moment(size: int, rank: int, seed: int) -> torch.Tensor:
    factors = torch.randn(rank, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return factors.T @ factors / rank  # (size, size), rank-deficient when rank < size


SIZES = (5, 3, 7)


def _block_pair() -> tuple[BlockDiagonal, BlockDiagonal]:
    r_eval = BlockDiagonal(tuple(_random_second_moment(size, 2, seed) for seed, size in enumerate(SIZES)))
    r_train = BlockDiagonal(tuple(_random_second_moment(size, 10, 10 + seed) for seed, size in enumerate(SIZES)))
    return r_eval, r_train


def test_block_inverse_sqrt_equals_the_dense_computation_on_the_block_diagonal_r():
    r_eval, r_train = _block_pair()
    mixed, used = mix_curvature(r_eval, r_train, "auto", auto_component=4)
    dense_mixed, dense_used = mix_curvature(r_eval.to_dense(), r_train.to_dense(), "auto", auto_component=4)
    assert used == pytest.approx(dense_used, rel=1e-10)  # lambda from the pooled eigenvalues of all blocks
    assert torch.allclose(mixed.to_dense(), dense_mixed, atol=1e-12)
    inverse = curvature_inverse_sqrt(mixed, damping=0.01)
    assert isinstance(inverse, BlockDiagonal) and inverse.sizes == SIZES
    # by hand: eigendecompose the (15, 15) block-diagonal R, shift by 0.01 * its mean eigenvalue
    eigenvalues, eigenvectors = torch.linalg.eigh(dense_mixed)
    shift = 0.01 * float(eigenvalues.mean())
    by_hand = (eigenvectors * (eigenvalues.clamp_min(0) + shift).rsqrt()) @ eigenvectors.T
    assert torch.allclose(inverse.to_dense().double(), by_hand, atol=1e-4)
    vectors = torch.randn(4, 15, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(inverse.apply(vectors), vectors @ by_hand.float(), atol=1e-4)


def test_block_curvature_round_trips_through_safetensors(tmp_path):
    r_eval, _ = _block_pair()
    save_curvature(tmp_path / "r.safetensors", r_eval.tensors("r_eval"), {"block_sizes": list(SIZES)})
    tensors, metadata = load_curvature(tmp_path / "r.safetensors")
    loaded = BlockDiagonal.from_tensors(tensors, "r_eval")
    assert loaded.sizes == SIZES and all(torch.equal(a, b) for a, b in zip(loaded.blocks, r_eval.blocks))
    assert metadata == {"block_sizes": "[5, 3, 7]"}
    assert BlockDiagonal.from_tensors({"r_eval": torch.eye(3)}, "r_eval").sizes == (3,)  # the old dense layout
    with pytest.raises(KeyError, match="rematerialize"):
        BlockDiagonal.from_tensors(tensors, "inverse_sqrt")


def test_damped_spectrum_is_checked_per_block():
    positive = _matrix_with_eigenvalues(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), seed=1)
    indefinite = _matrix_with_eigenvalues(torch.tensor([-1.0, 1.0, 6.0], dtype=torch.float64), seed=2)
    _, spectrum = damped_inverse_sqrt(BlockDiagonal((positive, indefinite)), damping=0.1)  # shift 0.1 * 12 / 6
    assert spectrum.block_min_eigenvalues == pytest.approx((1.2, -0.8))
    assert spectrum.blocks_not_positive == 1 and spectrum.condition == float("inf")
    _, minimum, _ = damped_spectrum(BlockDiagonal((positive, indefinite)), 0.1)
    assert minimum == pytest.approx(-0.8)


def test_inverse_sqrt_from_gradients_per_module_block():
    generator = torch.Generator().manual_seed(5)
    corpus, queries = torch.randn(40, 8, generator=generator), torch.randn(9, 8, generator=generator)
    settings = AttributionSettings(projection_dim=8, lambda_mix=0.7, damping=0.01, curvature_train_samples=15,
                                   projection_seed=3)
    inverse, _ = inverse_sqrt_from_gradients(corpus, queries, settings, block_sizes=(5, 3))
    sample = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:15]
    full = 0.7 * queries.double().T @ queries.double() / 9 + 0.3 * corpus[sample].double().T @ corpus[sample].double() / 15
    block_diagonal = torch.block_diag(full[:5, :5], full[5:, 5:])  # cross-module terms dropped
    assert torch.allclose(inverse.to_dense(), curvature_inverse_sqrt(block_diagonal, 0.01), atol=1e-5)
    with pytest.raises(ValueError, match="block_sizes=model_curvature_blocks"):
        inverse_sqrt_from_gradients(corpus, queries, settings)


def test_module_blocks_match_per_module_second_moments_by_hand_on_a_tiny_model():
    """Exact gradients (d = 0): each block of R^{-1/2} is built from that module's own weight gradients."""
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer), hidden=16)
    settings = AttributionSettings(projection_dim=0, lambda_mix=0.6, damping=0.01, curvature_train_samples=100,
                                   optimizer_correction="none")
    corpus, queries = corpus_examples(tokenizer), query_examples(tokenizer)
    inverse, _ = inverse_sqrt_from_gradients(collect_gradients(model, corpus, settings),
                                             collect_gradients(model, queries, settings), settings,
                                             block_sizes=model_curvature_blocks(model, settings))
    specs = hooked_modules(model, settings)
    train, evaluation = exact_gradients(model, corpus, specs), exact_gradients(model, queries, specs)
    # by hand, module by module: R_m = 0.6 mean(g_m g_m^T) over queries + 0.4 over the corpus
    mixed = []
    for m in range(len(specs)):
        train_m = torch.stack([grads[m].flatten() for grads in train]).double()  # (N, d_m)
        eval_m = torch.stack([grads[m].flatten() for grads in evaluation]).double()  # (Q, d_m)
        mixed.append(0.6 * eval_m.T @ eval_m / len(evaluation) + 0.4 * train_m.T @ train_m / len(train))
    shift = 0.01 * sum(float(torch.trace(r)) for r in mixed) / sum(r.shape[0] for r in mixed)
    assert inverse.sizes == tuple(r.shape[0] for r in mixed)
    for r, block in zip(mixed, inverse.blocks):
        eigenvalues, eigenvectors = torch.linalg.eigh(r)
        by_hand = (eigenvectors * (eigenvalues.clamp_min(0) + shift).rsqrt()) @ eigenvectors.T
        assert torch.allclose(block.double(), by_hand, rtol=1e-3, atol=1e-3 * float(by_hand.abs().max()))
