"""The corpus and queries: the source split into shard files, tokenized shards, and the shard sensor."""

import re

import polars as pl
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    asset,
    sensor,
)

from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.artifacts import load_checkpoint, load_sources, split_into_shards
from trackstar_pipeline.assets.partitions import corpus_shards_partitions, registered_shards
from trackstar_pipeline.assets.preview import markdown_table
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig


GENERATED_SHARD = re.compile(r"shard-\d{5}")
"""Names corpus_source gives its shard files; other files in corpus/sources/ are the user's."""


@asset(group_name="data", kinds={"parquet"})
def corpus_source(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """The whole corpus (from corpus_uri or the seeded world), also split into per-shard landing files."""
    store = object_store.store
    corpus, _, skipped = load_sources(pipeline.settings.data, object_store.storage_settings())
    for line in skipped:
        context.log.warning(f"skipped record: {line}")
    uri, size = layout.put_parquet(store, layout.CORPUS_SOURCE, corpus)
    shards = split_into_shards(corpus, pipeline.settings.data.shard_size)
    for shard, frame in shards.items():
        layout.put_parquet(store, layout.shard_source_key(shard), frame)
    stale = [key for key in layout.discover_shards(store) if GENERATED_SHARD.fullmatch(key) and key not in shards]
    for key in stale:  # left by an earlier split into more shards; the sensor unregisters them
        store.delete_prefix(layout.shard_source_key(key))
    context.log.info(f"corpus: {corpus.height} rows in {len(shards)} shards under {store.uri_for(layout.SHARD_SOURCES)}")
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.url(uri),
            "rows": corpus.height,
            "bytes": size,
            "shards": len(shards),
            "stale_shard_files_removed": len(stale),
            "skipped_records": len(skipped),
            "shard_sizes": MetadataValue.json({k: v.height for k, v in shards.items()}),
            "preview": MetadataValue.md(markdown_table(corpus.select("id", "text"))),
        }
    )


@asset(group_name="data", kinds={"parquet"})
def queries(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """The attribution queries (prompt + completion), stored once for every later stage."""
    _, frame, _ = load_sources(pipeline.settings.data, object_store.storage_settings())
    uri, size = layout.put_parquet(object_store.store, layout.QUERIES, frame)
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.url(uri),
            "rows": frame.height,
            "bytes": size,
            "preview": MetadataValue.md(markdown_table(frame.select("id", "prompt", "completion"))),
        }
    )


@asset(
    group_name="data",
    kinds={"parquet"},
    partitions_def=corpus_shards_partitions,
    deps=["corpus_source", "model_checkpoint"],
    automation_condition=AutomationCondition.eager(),
)
def corpus_shards(context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource) -> MaterializeResult:
    """One shard tokenized with the checkpoint's tokenizer (ids, text, facts, input_ids, loss_start)."""
    from trackstar_pipeline.attribution.examples import context_length, encode_corpus

    settings = pipeline.settings
    store = object_store.store
    shard = context.partition_key
    source = layout.get_parquet(store, layout.shard_source_key(shard))
    model, tokenizer = load_checkpoint(store, object_store.storage_settings())
    limit = context_length(model, settings.attribution.max_length)
    encoded = encode_corpus(source["id"].to_list(), source["text"].to_list(), tokenizer, limit, settings.attribution.overlength)
    by_id = {example.example_id: example for example in encoded.examples}
    frame = source.select("id", "text", *(["facts"] if "facts" in source.columns else [])).rename({"id": "example_id"})
    frame = frame.with_columns(
        pl.Series("input_ids", [list(by_id[i].input_ids) for i in frame["example_id"]], dtype=pl.List(pl.Int32)),
        pl.Series("loss_start", [by_id[i].loss_start for i in frame["example_id"]], dtype=pl.Int32),
    )
    uri, size = layout.put_parquet(store, layout.tokenized_shard_key(shard), frame)
    lengths = frame["input_ids"].list.len()
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.url(uri),
            "rows": frame.height,
            "bytes": size,
            "tokens": int(lengths.sum()),
            "max_tokens": int(lengths.max() or 0),
            "truncated": len(encoded.truncated_ids),
            "preview": MetadataValue.md(markdown_table(frame.select("example_id", "text", "loss_start"))),
        }
    )


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def corpus_shard_sensor(context: SensorEvaluationContext, object_store: ObjectStoreResource) -> SensorResult:
    """Registers a corpus_shards partition for every new shard file in corpus/sources/ (and drops removed ones)."""
    known = set(registered_shards(context.instance))
    new, gone = layout.shard_changes(known, layout.discover_shards(object_store.store))
    if not new and not gone:
        return SensorResult(skip_reason="no new or removed shard files under corpus/sources/")
    context.log.info(f"registering {len(new)} new shard(s): {new}; removing {len(gone)}: {gone}")
    requests = []
    if new:
        requests.append(corpus_shards_partitions.build_add_request(new))
    if gone:
        requests.append(corpus_shards_partitions.build_delete_request(gone))
    return SensorResult(dynamic_partitions_requests=requests)
