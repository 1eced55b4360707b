"""Curvature: R_train and R_eval second-moment matrices, their mix R, and the damped R^{-1/2}.

Each is block-diagonal (one float64 block per hooked module, or one dense block with
curvature_blocks='dense') and stored as safetensors with one tensor per block.
"""

from typing import Any

import numpy as np
import torch
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from trackstar_pipeline.storage import layout
from trackstar_pipeline.attribution.curvature import accumulate_curvature
from trackstar_pipeline.storage.artifacts import checkpoint_curvature_blocks, load_curvature_matrix, save_curvature_matrix
from trackstar_pipeline.assets.partitions import registered_shards
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig


def _stored_metadata(uri: str, size: int, matrix: Any, samples: int) -> dict:
    return {"uri": MetadataValue.url(uri), "bytes": size, "samples": samples, "dim": matrix.dim,
            "blocks": len(matrix.sizes), "trace": matrix.trace()}


@asset(group_name="curvature", kinds={"safetensors"}, deps=["projected_gradients", "model_checkpoint"])
def r_train(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """mean(g g^T) per module block over a seeded sample of training gradients (every registered shard contributes)."""
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

    block_sizes = checkpoint_curvature_blocks(store, object_store.storage_settings(), settings.attribution)
    matrix, samples = accumulate_curvature(blocks(), block_sizes)
    uri, size = save_curvature_matrix(store, layout.R_TRAIN, matrix, samples)
    return MaterializeResult(metadata={**_stored_metadata(uri, size, matrix, samples), "shards": len(shards)})


@asset(group_name="curvature", kinds={"safetensors"}, deps=["query_gradients", "model_checkpoint"])
def r_eval(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """mean(g g^T) per module block over the query (evaluation) gradients."""
    store = object_store.store
    _, vectors = layout.get_vectors(store, layout.QUERY_GRADIENTS)  # (Q, d)
    block_sizes = checkpoint_curvature_blocks(store, object_store.storage_settings(), pipeline.settings.attribution)
    matrix, samples = accumulate_curvature([vectors], block_sizes)
    uri, size = save_curvature_matrix(store, layout.R_EVAL, matrix, samples)
    return MaterializeResult(metadata=_stored_metadata(uri, size, matrix, samples))


@asset(
    group_name="curvature",
    kinds={"safetensors"},
    deps=["r_train", "r_eval"],
    check_specs=[AssetCheckSpec("r_spd_after_damping", asset="curvature_inverse_sqrt",
                                description="every block of R is symmetric and positive definite once damped")],
)
def curvature_inverse_sqrt(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """R = lambda R_eval + (1 - lambda) R_train and its damped R^{-1/2}, block by block (absent when curvature is off)."""
    from trackstar_pipeline.attribution.curvature import damped_mix

    attribution, store = pipeline.settings.attribution, object_store.store
    if not attribution.curvature:
        layout.put_json(store, layout.CURVATURE_MANIFEST, {"enabled": False})
        return MaterializeResult(metadata={"enabled": False},
                                 check_results=[AssetCheckResult(passed=True, metadata={"skipped": "curvature disabled"})])
    storage = object_store.storage_settings()
    inverse, lambda_used, spectrum = damped_mix(load_curvature_matrix(store, storage, layout.R_EVAL),
                                                load_curvature_matrix(store, storage, layout.R_TRAIN),
                                                attribution)  # float32 blocks
    context.log.info(f"R^-1/2 over {len(inverse.sizes)} block(s) of d={inverse.dim}, lambda={lambda_used:.4f}")
    uri, size = save_curvature_matrix(store, layout.INVERSE_SQRT, inverse, extra_metadata={
        "lambda_used": str(lambda_used), "damping": str(attribution.damping)})
    layout.put_json(store, layout.CURVATURE_MANIFEST, {"enabled": True, "lambda_used": float(lambda_used),
                                                       "damping": attribution.damping, "blocks": len(inverse.sizes)})
    finite = all(bool(torch.isfinite(block).all()) for block in inverse.blocks)
    worst = int(np.argmin(spectrum.block_min_eigenvalues))
    return MaterializeResult(
        metadata={"uri": MetadataValue.url(uri), "bytes": size, "lambda_used": float(lambda_used),
                  "damping": attribution.damping, "condition_number": spectrum.condition,
                  "min_eigenvalue_damped": spectrum.min_eigenvalue, "dim": inverse.dim, "blocks": len(inverse.sizes),
                  "curvature_blocks": attribution.curvature_blocks},
        check_results=[AssetCheckResult(
            passed=spectrum.relative_asymmetry < 1e-6 and spectrum.blocks_not_positive == 0 and finite,
            metadata={"relative_asymmetry": spectrum.relative_asymmetry, "min_eigenvalue_damped": spectrum.min_eigenvalue,
                      "blocks": len(spectrum.block_min_eigenvalues), "blocks_not_positive": spectrum.blocks_not_positive,
                      "worst_block": worst, "inverse_finite": finite},
        )],
    )
