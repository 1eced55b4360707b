"""Curvature: R_train and R_eval second-moment matrices, their mix R, and the damped R^{-1/2}."""

import tempfile
from pathlib import Path

import numpy as np
import torch
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.artifacts import load_curvature_file
from trackstar_pipeline.assets.partitions import registered_shards
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig
from trackstar_pipeline.storage import ObjectStore


def _save(store: ObjectStore, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, int]:
    from trackstar_pipeline.attribution.curvature import save_curvature

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / Path(key).name
        save_curvature(path, tensors, metadata)
        return store.put_file(key, path), path.stat().st_size


def _accumulate(blocks) -> tuple[torch.Tensor, int]:
    from trackstar_pipeline.attribution.curvature import CurvatureAccumulator

    accumulator = None
    for vectors in blocks:
        if accumulator is None:
            accumulator = CurvatureAccumulator(vectors.shape[1])
        if len(vectors):
            accumulator.update(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)))  # (B, d)
    if accumulator is None or accumulator.count == 0:
        raise ValueError("no gradients to accumulate; materialize projected_gradients / query_gradients first")
    return accumulator.mean(), accumulator.count  # (d, d) float64


@asset(group_name="curvature", kinds={"safetensors"}, deps=["projected_gradients"])
def r_train(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """mean(g g^T) over a seeded sample of training gradients (every registered shard contributes)."""
    from trackstar_pipeline.attribution.curvature import curvature_train_sample

    settings, store = pipeline.settings, object_store.store
    shards = registered_shards(context.instance)
    sizes = [layout.get_json(store, f"{layout.train_gradients_prefix(s)}/manifest.json")["rows"] for s in shards]
    total = sum(sizes)
    keep = np.zeros(total, dtype=bool)
    keep[curvature_train_sample(total, settings.attribution.curvature_train_samples,
                                settings.attribution.projection_seed).numpy()] = True
    offsets = np.cumsum([0, *sizes])

    def blocks():
        for shard, start, end in zip(shards, offsets[:-1], offsets[1:]):
            _, vectors = layout.get_vectors(store, layout.train_gradients_prefix(shard))  # (N_shard, d)
            yield vectors[keep[start:end]]

    matrix, count = _accumulate(blocks())
    uri, size = _save(store, layout.R_TRAIN, {"r_train": matrix}, {"samples": str(count)})
    return MaterializeResult(metadata={"uri": MetadataValue.url(uri), "bytes": size, "samples": count,
                                       "shards": len(shards), "dim": int(matrix.shape[0]), "trace": float(torch.trace(matrix))})


@asset(group_name="curvature", kinds={"safetensors"}, deps=["query_gradients"])
def r_eval(context: AssetExecutionContext, object_store: ObjectStoreResource) -> MaterializeResult:
    """mean(g g^T) over the query (evaluation) gradients."""
    store = object_store.store
    _, vectors = layout.get_vectors(store, layout.QUERY_GRADIENTS)  # (Q, d)
    matrix, count = _accumulate([vectors])
    uri, size = _save(store, layout.R_EVAL, {"r_eval": matrix}, {"samples": str(count)})
    return MaterializeResult(metadata={"uri": MetadataValue.url(uri), "bytes": size, "samples": count,
                                       "dim": int(matrix.shape[0]), "trace": float(torch.trace(matrix))})


@asset(
    group_name="curvature",
    kinds={"safetensors"},
    deps=["r_train", "r_eval"],
    check_specs=[AssetCheckSpec("r_spd_after_damping", asset="curvature_inverse_sqrt",
                                description="R is symmetric and positive definite once damped")],
)
def curvature_inverse_sqrt(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """R = lambda R_eval + (1 - lambda) R_train and its damped R^{-1/2} (absent when curvature is off)."""
    from trackstar_pipeline.attribution.curvature import curvature_inverse_sqrt as inverse_sqrt
    from trackstar_pipeline.attribution.curvature import damped_spectrum, mix_curvature

    attribution, store = pipeline.settings.attribution, object_store.store
    if not attribution.curvature:
        layout.put_json(store, layout.CURVATURE_MANIFEST, {"enabled": False})
        return MaterializeResult(metadata={"enabled": False},
                                 check_results=[AssetCheckResult(passed=True, metadata={"skipped": "curvature disabled"})])
    train, _ = load_curvature_file(store, object_store.storage_settings(), layout.R_TRAIN)
    evaluation, _ = load_curvature_file(store, object_store.storage_settings(), layout.R_EVAL)
    mixed, lambda_used = mix_curvature(evaluation["r_eval"], train["r_train"], attribution.lambda_mix, attribution.lambda_auto_component)
    inverse = inverse_sqrt(mixed, attribution.damping)  # (d, d) float32
    asymmetry, min_eigenvalue, condition = damped_spectrum(mixed, attribution.damping)
    uri, size = _save(store, layout.INVERSE_SQRT, {"inverse_sqrt": inverse},
                      {"lambda_used": str(lambda_used), "damping": str(attribution.damping)})
    layout.put_json(store, layout.CURVATURE_MANIFEST, {"enabled": True, "lambda_used": float(lambda_used), "damping": attribution.damping})
    finite = bool(torch.isfinite(inverse).all())
    return MaterializeResult(
        metadata={"uri": MetadataValue.url(uri), "bytes": size, "lambda_used": float(lambda_used),
                  "damping": attribution.damping, "condition_number": condition, "min_eigenvalue_damped": min_eigenvalue,
                  "dim": int(inverse.shape[0])},
        check_results=[AssetCheckResult(
            passed=asymmetry < 1e-6 and min_eigenvalue > 0 and finite,
            metadata={"relative_asymmetry": asymmetry, "min_eigenvalue_damped": min_eigenvalue, "inverse_finite": finite},
        )],
    )
