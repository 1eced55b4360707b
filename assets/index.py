"""The LanceDB gradient table (one merge_insert commit per shard), its ANN index, and the re-optimize schedule."""

import time
from datetime import timedelta

import numpy as np
import torch
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    asset,
    define_asset_job,
)

from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.artifacts import load_inverse_sqrt, load_query_vectors
from trackstar_pipeline.assets.partitions import corpus_shards_partitions, registered_shards
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, TorchDevice, VectorStore
from trackstar_pipeline.storage.vector_table import duplicate_ids, table_rows

@asset(
    group_name="index",
    kinds={"lancedb"},
    partitions_def=corpus_shards_partitions,
    deps=["projected_gradients", "curvature_inverse_sqrt", "corpus_shards"],
    pool="lancedb",
    automation_condition=AutomationCondition.eager(),
    check_specs=[
        AssetCheckSpec("no_duplicate_example_ids", asset="gradient_table", description="every example_id occurs once in the table"),
        AssetCheckSpec("rows_match_shard", asset="gradient_table", description="the table holds exactly the shard's examples"),
        AssetCheckSpec("norms_finite", asset="gradient_table", description="every stored vector has a finite norm"),
    ],
)
def gradient_table(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
                   vector_store: VectorStore) -> MaterializeResult:
    """Writes R^{-1/2} g, unit-normalized, for one shard with a single merge_insert commit (replaces the shard's rows)."""
    from trackstar_pipeline.attribution.scoring import prepare_vectors

    settings, store, shard = pipeline.settings, object_store.store, context.partition_key
    ids, gradients = layout.get_vectors(store, layout.train_gradients_prefix(shard))  # (N, d)
    texts = dict(layout.get_parquet(store, layout.tokenized_shard_key(shard)).select("example_id", "text").iter_rows())
    inverse = load_inverse_sqrt(store, object_store.storage_settings())
    vectors = prepare_vectors(torch.from_numpy(gradients), inverse, settings.attribution.unit_normalize).numpy()  # (N, d)
    rows = table_rows(ids, shard, [texts[i] for i in ids], vectors)
    stored = np.asarray(rows["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(len(ids), -1)  # (N, d)
    norms = np.linalg.norm(stored, axis=1)
    table, recreated = vector_store.open_or_create_table(rows.schema)
    if recreated:
        context.log.warning(f"{vector_store.table_name}: schema changed (d={vectors.shape[1]}); the table was recreated empty")
    result = (table.merge_insert("example_id").when_matched_update_all().when_not_matched_insert_all()
              .when_not_matched_by_source_delete(f"shard = '{shard}'").execute(rows))
    shard_rows, duplicates = table.count_rows(f"shard = '{shard}'"), duplicate_ids(table, ids)
    summary = layout.norm_summary(norms)
    return MaterializeResult(
        metadata={
            "uri": vector_store.uri, "table": vector_store.table_name, "table_version": int(table.version),
            "rows": shard_rows, "table_rows": table.count_rows(), "inserted": result.num_inserted_rows,
            "updated": result.num_updated_rows, "deleted": result.num_deleted_rows, "dim": int(vectors.shape[1]),
            "norms": MetadataValue.json(summary),
        },
        check_results=[
            AssetCheckResult(check_name="no_duplicate_example_ids", passed=not duplicates,
                             metadata={"duplicates": len(duplicates), "examples": MetadataValue.json(duplicates[:10])}),
            AssetCheckResult(check_name="rows_match_shard", passed=shard_rows == len(ids),
                             metadata={"table_rows_for_shard": shard_rows, "shard_size": len(ids)}),
            AssetCheckResult(check_name="norms_finite", passed=summary["non_finite"] == 0, metadata=summary),
        ],
    )


@asset(
    group_name="index",
    kinds={"lancedb"},
    deps=["gradient_table", "query_gradients", "curvature_inverse_sqrt"],
    pool="lancedb",
    check_specs=[AssetCheckSpec("ann_recall", asset="gradient_index",
                                description="recall@k of the IVF index against exact search reaches the target "
                                            "(passes trivially when the table is small enough for exact search)")],
)
def gradient_index(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource,
                   vector_store: VectorStore, torch_device: TorchDevice) -> MaterializeResult:
    """An IVF index once exact batched search gets slower (search.ann_min_rows), its nprobes tuned to the recall
    target on a sample of the queries; then a scalar index on example_id, compaction and cleanup."""
    from lancedb.index import BTree

    from trackstar_pipeline.attribution import ann_index

    search, store = pipeline.settings.search, object_store.store
    table = vector_store.open_table()
    shards = registered_shards(context.instance)
    before = table.count_rows()
    if shards:  # rows of shards that were removed from the corpus
        table.delete("shard NOT IN (" + ", ".join(f"'{shard}'" for shard in shards) + ")")
    rows, dim = table.count_rows(), table.schema.field("vector").type.list_size
    vector_indices = [index.name for index in table.list_indices() if index.columns == ["vector"]]
    ann, sweep, index, build_seconds, accelerator, probes = None, [], "none (exact search)", 0.0, None, 0
    if rows >= search.ann_min_rows:
        accelerator = ann_index.index_accelerator()
        config, index = ann_index.index_config(search, rows, dim, accelerator)
        context.log.info(f"building {index} over {rows} rows (accelerator: {accelerator or 'cpu'})")
        started = time.perf_counter()
        table.create_index("vector", config=config, replace=True)
        build_seconds = time.perf_counter() - started
        _, queries = load_query_vectors(store, object_store.storage_settings(), pipeline.settings.attribution.unit_normalize)
        probe = ann_index.sample_queries(queries, search.ann_recall_queries)  # (S, d)
        probes = probe.shape[0]
        ann, sweep = ann_index.tune_nprobes(table, probe, config.num_partitions, search, index,
                                            torch_device.torch_device, context.log.info)
    else:
        for name in vector_indices:  # a table that shrank below the threshold goes back to exact search
            table.drop_index(name)
    ann_index.save_ann_parameters(store, ann, {"rows": rows, "table_version": int(table.version)})
    if rows:
        table.create_index("example_id", config=BTree(), replace=True)  # serves the per-shard duplicate check and text lookups
    table.optimize(cleanup_older_than=timedelta(days=7))
    recall = ann.recall if ann else None
    return MaterializeResult(
        metadata={"uri": vector_store.uri, "rows": rows, "pruned_rows": before - rows, "dim": dim, "index": index,
                  "table_version": int(table.version), "ann_min_rows": search.ann_min_rows,
                  "build_seconds": build_seconds, "accelerator": accelerator or "cpu",
                  **({"recall_at_k": recall, "nprobes": ann.nprobes, "refine_factor": ann.refine_factor,
                      "recall_sweep": MetadataValue.json(sweep)} if ann else {})},
        check_results=[AssetCheckResult(
            check_name="ann_recall", passed=ann is None or ann.recall >= search.ann_recall_target,
            metadata={"recall_at_k": recall if recall is not None else 1.0, "target": search.ann_recall_target,
                      "k": search.ann_recall_k, "queries": probes,
                      "search": "ann" if ann else "exact"})],
    )


reoptimize_index_job = define_asset_job("reoptimize_gradient_index", selection=["gradient_index"])
reoptimize_index_schedule = ScheduleDefinition(
    job=reoptimize_index_job, cron_schedule="0 3 * * *", default_status=DefaultScheduleStatus.STOPPED,
    description="Nightly: rebuild the ANN index over rows added since, compact fragments, drop old versions.",
)
