"""Fixtures for the asset tests: the tiny configuration."""

import pytest

from trackstar_pipeline.settings import (
    AttributionSettings,
    DataSettings,
    EvaluationSettings,
    PipelineSettings,
    StorageSettings,
    TrainingSettings,
)


def tiny_settings(storage: StorageSettings) -> PipelineSettings:
    return PipelineSettings(
        attribution=AttributionSettings(projection_dim=56, batch_size=16, device="cpu", curvature_train_samples=40),
        data=DataSettings(n_corpus=48, n_queries=6, shard_size=24),
        training=TrainingSettings(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300,
                                  max_length=32, epochs=1, batch_size=16, checkpoint_every=1000, num_threads=1),
        evaluation=EvaluationSettings(top_k=5, tailpatch_k=(1,), max_eval_queries=3, projection_dim_sweep=(14, 28),
                                      closed_set_bm25=5, closed_set_same_completion=5, closed_set_random=5),
        storage=storage,
    )


@pytest.fixture(scope="session")
def tiny():
    """The tiny-settings factory (a fixture, so test modules need no package imports)."""
    return tiny_settings
