"""Ablations built from stored raw gradients: one changed ingredient each, new gradient passes only where needed."""

from dataclasses import replace

import polars as pl
import torch

from trackstar_pipeline.attribution.curvature import BlockDiagonal, curvature_inverse_sqrt, curvature_train_sample
from trackstar_pipeline.evaluation import ablations
from trackstar_pipeline.attribution.curvature import curvature_moments
from trackstar_pipeline.evaluation.ablations import GradientSource, lambda_method_name, trackstar_methods
from trackstar_pipeline.evaluation.corpus_shards import frame_shards
from trackstar_pipeline.evaluation.stream import ShardRows
from trackstar_pipeline.settings import AttributionSettings

SETTINGS = AttributionSettings(projection_dim=6, curvature_train_samples=5, lambda_mix=0.7, damping=1e-3,
                               curvature_blocks="dense")


class Stored:
    """Stored raw gradients: the query side (a GradientSource) plus the corpus rows a shard would carry."""

    def __init__(self, corpus, queries, r_train, r_eval):
        self.corpus, self.queries, self.r_train, self.r_eval = corpus, queries, r_train, r_eval
        self.source = GradientSource([f"q{i}" for i in range(len(queries))], queries, r_train, r_eval)
        frame = pl.DataFrame({"id": [f"c{i}" for i in range(len(corpus))], "text": [""] * len(corpus)})
        sharded = frame_shards(frame, 1, corpus)
        self.shard = ShardRows(sharded.names[0], frame, sharded)


def _stored(seed: int = 0, n: int = 12, q: int = 8, d: int = 6) -> Stored:
    generator = torch.Generator().manual_seed(seed)
    corpus, queries = torch.randn(n, d, generator=generator), torch.randn(q, d, generator=generator)  # (N, d), (Q, d)
    r_train, r_eval = (moments.to_dense() for moments in curvature_moments(corpus, queries, SETTINGS))  # (d, d) each
    return Stored(corpus, queries, r_train, r_eval)


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
    scorers, _, used = trackstar_methods(stored.source, evaluated, SETTINGS)
    assert used == 0.7
    mixed = 0.7 * stored.r_eval + 0.3 * stored.r_train
    inverse = curvature_inverse_sqrt(mixed, SETTINGS.damping)  # (d, d)
    rows = stored.queries[[1, 4]]  # (2, d)
    torch.testing.assert_close(scorers["trackstar"].query_vectors, _unit(rows @ inverse))
    torch.testing.assert_close(scorers["trackstar"].corpus_vectors(stored.shard), _unit(stored.corpus @ inverse))
    torch.testing.assert_close(scorers["trackstar_no_curvature"].corpus_vectors(stored.shard), _unit(stored.corpus))
    torch.testing.assert_close(scorers["trackstar_no_unit_norm"].corpus_vectors(stored.shard), stored.corpus @ inverse)
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
    sample = [type("Example", (), {"example_id": f"c{i}"})() for i in range(5)]  # the R_train sample's rows
    stored.shard.examples = [type("Example", (), {"example_id": f"c{i}"})() for i in range(12)]

    def new_pass(settings, moments):
        return ablations.gradient_pass(torch.nn.Linear(1, 1), queries, lambda: sample, settings, moments,
                                       progress=lambda _: None)

    scorers, aliases, _ = trackstar_methods(stored.source, ["q0", "q2"], SETTINGS, new_pass, second_moments=object(),
                                            projection_dims=(4, 6))
    # every query and the R_train sample, once without the correction (d=6) and once at d=4; d=6 with it is stored
    assert sorted(passes) == sorted([(8, 6, False), (5, 6, False), (8, 4, True), (5, 4, True)])
    assert aliases == {"trackstar_d6": "trackstar"}
    # the corpus rows are computed shard by shard, once per variant however many times they are asked for
    assert scorers["trackstar_d4"].corpus_vectors(stored.shard).shape == (12, 4)
    scorers["trackstar_d4"].scores(stored.shard)
    assert passes.count((12, 4, True)) == 1
    assert scorers["trackstar_no_optimizer"].query_vectors.shape == (2, 6)


def test_without_curvature_no_r_is_built():
    stored = _stored()
    scorers, _, used = trackstar_methods(stored.source, ["q0"], replace(SETTINGS, curvature=False))
    assert used is None and "trackstar_r_train_only" not in scorers
    torch.testing.assert_close(scorers["trackstar"].corpus_vectors(stored.shard), _unit(stored.corpus))


def test_module_blocks_whiten_each_block_with_its_own_r():
    dense = _stored()
    sizes = (2, 4)
    settings = replace(SETTINGS, curvature_blocks="module")
    r_train, r_eval = curvature_moments(dense.corpus, dense.queries, settings, block_sizes=sizes)
    assert isinstance(r_train, BlockDiagonal) and r_train.sizes == sizes
    stored = Stored(dense.corpus, dense.queries, r_train, r_eval)
    scorers, _, _ = trackstar_methods(stored.source, ["q3"], settings)
    mixed = torch.zeros(6, 6, dtype=torch.float64)  # by hand: the dense R with cross-module entries zeroed
    for block in (slice(0, 2), slice(2, 6)):
        mixed[block, block] = 0.7 * dense.r_eval[block, block] + 0.3 * dense.r_train[block, block]
    expected = [dense.corpus @ curvature_inverse_sqrt(mixed, SETTINGS.damping).float()]  # (N, d)
    torch.testing.assert_close(scorers["trackstar"].corpus_vectors(stored.shard), _unit(torch.cat(expected, dim=1)))


def test_curvature_sweep_changes_lambda_or_damping_alone_and_skips_the_tables_own():
    stored = _stored()
    scorers, _, _ = trackstar_methods(stored.source, ["q1", "q4"], SETTINGS, lambdas=(0.7, 0.2), dampings=(1e-3, 10.0))
    sweep = {name for name in scorers if name.startswith(("trackstar_lambda", "trackstar_damping"))}
    assert sweep == {"trackstar_lambda0.2", "trackstar_damping10"}  # 0.7 and 1e-3 are the table's: 'trackstar'
    rows = stored.queries[[1, 4]]  # (2, d)
    low_lambda = curvature_inverse_sqrt(0.2 * stored.r_eval + 0.8 * stored.r_train, SETTINGS.damping)
    torch.testing.assert_close(scorers["trackstar_lambda0.2"].query_vectors, _unit(rows @ low_lambda))
    damped = curvature_inverse_sqrt(0.7 * stored.r_eval + 0.3 * stored.r_train, 10.0)
    torch.testing.assert_close(scorers["trackstar_damping10"].corpus_vectors(stored.shard), _unit(stored.corpus @ damped))
    assert not torch.allclose(scorers["trackstar_damping10"].corpus_vectors(stored.shard),
                              scorers["trackstar"].corpus_vectors(stored.shard))


def test_a_lambda_sweep_entry_of_zero_is_r_train_only_not_built_twice():
    stored = _stored()
    scorers, aliases, _ = trackstar_methods(stored.source, ["q1"], SETTINGS, lambdas=(0.0, 0.2))
    assert aliases == {"trackstar_lambda0.0": "trackstar_r_train_only"}
    assert "trackstar_lambda0.0" not in scorers and "trackstar_lambda0.2" in scorers


def test_lambda_method_name_is_the_name_trackstar_methods_gives_that_lambda():
    stored = _stored()
    scorers, aliases, _ = trackstar_methods(stored.source, ["q1"], SETTINGS, lambdas=(0.2, "auto"))
    for value in (None, 0.7, 0.0, 0.2, "auto"):
        assert lambda_method_name(SETTINGS, value) in {**scorers, **aliases}, value
    assert [lambda_method_name(SETTINGS, v) for v in (None, 0.7, 0.0, 0, 0.2)] == \
        ["trackstar", "trackstar", "trackstar_r_train_only", "trackstar_r_train_only", "trackstar_lambda0.2"]
    assert lambda_method_name(replace(SETTINGS, curvature=False), 0.0) == "trackstar"  # no R: every lambda is one
    try:
        lambda_method_name(SETTINGS, 1.5)
    except ValueError as error:
        assert "[0, 1]" in str(error)
    else:
        raise AssertionError("a lambda outside [0, 1] was accepted")
