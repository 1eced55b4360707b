"""Ablations built from stored raw gradients: one changed ingredient each, new gradient passes only where needed."""

from dataclasses import replace

import torch

from trackstar_pipeline.attribution.curvature import BlockDiagonal, curvature_inverse_sqrt, curvature_train_sample
from trackstar_pipeline.evaluation import ablations
from trackstar_pipeline.attribution.curvature import curvature_moments
from trackstar_pipeline.evaluation.ablations import RawGradients, trackstar_scorers
from trackstar_pipeline.settings import AttributionSettings

SETTINGS = AttributionSettings(projection_dim=6, curvature_train_samples=5, lambda_mix=0.7, damping=1e-3,
                               curvature_blocks="dense")


def _stored(seed: int = 0, n: int = 12, q: int = 8, d: int = 6) -> RawGradients:
    generator = torch.Generator().manual_seed(seed)
    corpus, queries = torch.randn(n, d, generator=generator), torch.randn(q, d, generator=generator)  # (N, d), (Q, d)
    r_train, r_eval = (moments.to_dense() for moments in curvature_moments(corpus, queries, SETTINGS))  # (d, d) each
    return RawGradients([f"c{i}" for i in range(n)], corpus, [f"q{i}" for i in range(q)], queries, r_train, r_eval)


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True)


def test_moments_follow_the_curvature_assets_rule():
    stored = _stored()
    sample = curvature_train_sample(12, 5, SETTINGS.projection_seed)
    torch.testing.assert_close(stored.r_train, stored.corpus[sample].double().T @ stored.corpus[sample].double() / 5)
    torch.testing.assert_close(stored.r_eval, stored.queries.double().T @ stored.queries.double() / 8)


def test_each_ablation_changes_one_ingredient_and_r_eval_uses_every_query():
    stored = _stored()
    evaluated = ["q1", "q4"]  # a sample; R_eval still averages over all eight queries
    scorers, used = trackstar_scorers(stored, evaluated, SETTINGS, progress=lambda _: None)
    assert used == 0.7
    mixed = 0.7 * stored.r_eval + 0.3 * stored.r_train
    inverse = curvature_inverse_sqrt(mixed, SETTINGS.damping)  # (d, d)
    rows = stored.queries[[1, 4]]  # (2, d)
    torch.testing.assert_close(scorers["trackstar"].query_vectors, _unit(rows @ inverse))
    torch.testing.assert_close(scorers["trackstar"].corpus_vectors, _unit(stored.corpus @ inverse))
    torch.testing.assert_close(scorers["trackstar_no_curvature"].corpus_vectors, _unit(stored.corpus))
    torch.testing.assert_close(scorers["trackstar_no_unit_norm"].corpus_vectors, stored.corpus @ inverse)
    train_only = curvature_inverse_sqrt(stored.r_train, SETTINGS.damping)
    torch.testing.assert_close(scorers["trackstar_r_train_only"].query_vectors, _unit(rows @ train_only))
    assert set(scorers) == {"trackstar", "trackstar_no_curvature", "trackstar_no_unit_norm", "trackstar_r_train_only"}


def test_only_no_optimizer_and_other_dims_take_a_gradient_pass(monkeypatch):
    stored = _stored()
    passes = []

    def fake_gradients(model, examples, settings, moments=None, *_, **__):
        passes.append((len(examples), settings.projection_dim, moments is not None))
        return torch.randn(len(examples), settings.projection_dim)  # (N, d)

    monkeypatch.setattr(ablations, "collect_gradients", fake_gradients)
    queries = [type("Example", (), {"example_id": f"q{i}"})() for i in range(8)]
    corpus = [type("Example", (), {"example_id": f"c{i}"})() for i in range(12)]
    scorers, _ = trackstar_scorers(stored, ["q0", "q2"], SETTINGS, model=torch.nn.Linear(1, 1), corpus_examples=corpus,
                                   query_examples=queries, second_moments=object(), projection_dims=(4, 6),
                                   progress=lambda _: None)
    # corpus and every query, once without the correction (d=6) and once at d=4; d=6 with it is the stored one
    assert sorted(passes) == sorted([(8, 6, False), (12, 6, False), (8, 4, True), (12, 4, True)])
    assert scorers["trackstar_d6"] is scorers["trackstar"]
    assert scorers["trackstar_d4"].corpus_vectors.shape == (12, 4)
    assert scorers["trackstar_no_optimizer"].query_ids == ["q0", "q2"]


def test_without_curvature_no_r_is_built():
    stored = _stored()
    scorers, used = trackstar_scorers(stored, ["q0"], replace(SETTINGS, curvature=False), progress=lambda _: None)
    assert used is None and "trackstar_r_train_only" not in scorers
    torch.testing.assert_close(scorers["trackstar"].corpus_vectors, _unit(stored.corpus))


def test_module_blocks_whiten_each_block_with_its_own_r():
    dense = _stored()
    sizes = (2, 4)
    settings = replace(SETTINGS, curvature_blocks="module")
    r_train, r_eval = curvature_moments(dense.corpus, dense.queries, settings, block_sizes=sizes)
    assert isinstance(r_train, BlockDiagonal) and r_train.sizes == sizes
    stored = RawGradients(dense.corpus_ids, dense.corpus, dense.query_ids, dense.queries, r_train, r_eval)
    scorers, _ = trackstar_scorers(stored, ["q3"], settings, progress=lambda _: None)
    mixed = torch.zeros(6, 6, dtype=torch.float64)  # by hand: the dense R with cross-module entries zeroed
    for block in (slice(0, 2), slice(2, 6)):
        mixed[block, block] = 0.7 * dense.r_eval[block, block] + 0.3 * dense.r_train[block, block]
    expected = [dense.corpus @ curvature_inverse_sqrt(mixed, SETTINGS.damping).float()]  # (N, d)
    torch.testing.assert_close(scorers["trackstar"].corpus_vectors, _unit(torch.cat(expected, dim=1)))
