"""Projected, optimizer-corrected loss gradients (before R) for each corpus shard and for the queries."""

from typing import Any

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.artifacts import load_checkpoint, load_optimizer_moments
from trackstar_pipeline.assets.partitions import corpus_shards_partitions
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, TorchDevice


def _progress(context: AssetExecutionContext, what: str):
    """A collect_gradients progress callback that logs about ten lines per call."""
    logged = {"tenth": -1}

    def report(done: int, total: int) -> None:
        tenth = (10 * done) // max(1, total)
        if tenth != logged["tenth"]:
            logged["tenth"] = tenth
            context.log.info(f"{what}: {done}/{total} examples")

    return report


def _gradients(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
               torch_device: TorchDevice, model: Any, examples: list[Any], what: str) -> np.ndarray:
    """collect_gradients of the stored checkpoint (already loaded) with its optimizer state; (N, d) float32."""
    from trackstar_pipeline.attribution.gradients import collect_gradients

    store, storage = object_store.store, object_store.storage_settings()
    moments = load_optimizer_moments(store, storage, model, pipeline.settings.attribution.optimizer_correction)
    vectors = collect_gradients(model, examples, pipeline.settings.attribution, second_moments=moments,
                                device=torch_device.torch_device, progress=_progress(context, what))
    return vectors.numpy()  # (N, d) float32


def _norm_check(asset_key: str, norms: dict[str, float]) -> AssetCheckResult:
    return AssetCheckResult(check_name="norms_finite", asset_key=asset_key, passed=norms["non_finite"] == 0,
                            metadata={"non_finite": norms["non_finite"], "min_norm": norms["min"], "max_norm": norms["max"]})


@asset(
    group_name="gradients",
    kinds={"pytorch", "numpy"},
    partitions_def=corpus_shards_partitions,
    deps=["corpus_shards", "model_checkpoint", "optimizer_state"],
    pool="gpu",
    automation_condition=AutomationCondition.eager(),
    check_specs=[AssetCheckSpec("norms_finite", asset="projected_gradients", description="every gradient norm is finite")],
)
def projected_gradients(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
                        torch_device: TorchDevice) -> MaterializeResult:
    """Per-example gradients of one shard: vectors.npy (N, d) + manifest.json under gradients/train/<shard>."""
    from trackstar_pipeline.attribution.examples import TokenizedExample

    store, shard = object_store.store, context.partition_key
    frame = layout.get_parquet(store, layout.tokenized_shard_key(shard))
    examples = [TokenizedExample(example_id=i, input_ids=tuple(ids), loss_start=int(start))
                for i, ids, start in frame.select("example_id", "input_ids", "loss_start").iter_rows()]
    model, _ = load_checkpoint(store, object_store.storage_settings(), device=torch_device.torch_device)
    vectors = _gradients(context, pipeline, object_store, torch_device, model, examples, f"projected_gradients[{shard}]")
    prefix = layout.train_gradients_prefix(shard)
    uri, size = layout.put_vectors(store, prefix, [e.example_id for e in examples], vectors, {"shard": shard})
    norms = layout.get_json(store, f"{prefix}/manifest.json")["norms"]
    return MaterializeResult(
        metadata={"uri": MetadataValue.url(uri), "rows": len(examples), "dim": int(vectors.shape[1]), "bytes": size,
                  "norms": MetadataValue.json(norms), "device": str(torch_device.torch_device)},
        check_results=[_norm_check("projected_gradients", norms)],
    )


@asset(
    group_name="gradients",
    kinds={"pytorch", "numpy"},
    deps=["queries", "model_checkpoint", "optimizer_state"],
    pool="gpu",
    check_specs=[AssetCheckSpec("norms_finite", asset="query_gradients", description="every gradient norm is finite")],
)
def query_gradients(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
                    torch_device: TorchDevice) -> MaterializeResult:
    """Completion-only loss gradients of every query, stored like a shard under gradients/queries."""
    from trackstar_pipeline.attribution.examples import context_length, encode_queries

    settings, store = pipeline.settings, object_store.store
    frame = layout.get_parquet(store, layout.QUERIES)
    model, tokenizer = load_checkpoint(store, object_store.storage_settings(), device=torch_device.torch_device)
    encoded = encode_queries(frame["id"].to_list(), frame["prompt"].to_list(), frame["completion"].to_list(), tokenizer,
                             context_length(model, settings.attribution.max_length), settings.attribution.overlength)
    vectors = _gradients(context, pipeline, object_store, torch_device, model, encoded.examples, "query_gradients")
    uri, size = layout.put_vectors(store, layout.QUERY_GRADIENTS, [e.example_id for e in encoded.examples], vectors,
                                   {"truncated": encoded.truncated_ids})
    norms = layout.get_json(store, f"{layout.QUERY_GRADIENTS}/manifest.json")["norms"]
    return MaterializeResult(
        metadata={"uri": MetadataValue.url(uri), "rows": len(encoded.examples), "dim": int(vectors.shape[1]),
                  "bytes": size, "truncated": len(encoded.truncated_ids), "norms": MetadataValue.json(norms)},
        check_results=[_norm_check("query_gradients", norms)],
    )
