"""Shards come and go: stale generated shard files, partitions and table rows are removed; users' files stay."""

import dagster as dg
import numpy as np
import polars as pl

from trackstar_pipeline.storage import layout
from trackstar_pipeline.assets.corpus import corpus_shard_sensor, corpus_source
from trackstar_pipeline.storage.layout import discover_shards
from trackstar_pipeline.assets.index import gradient_index
from trackstar_pipeline.storage.vector_table import table_rows
from trackstar_pipeline.definitions import build_resources
from trackstar_pipeline.pipeline_run import register_shards
from trackstar_pipeline.resources import VectorStore
from trackstar_pipeline.settings import StorageSettings
from trackstar_pipeline.storage import ObjectStore

USER_SHARD = pl.DataFrame({"id": ["u1"], "text": ["a user's row"], "facts": [[]]},
                          schema={"id": pl.String, "text": pl.String, "facts": pl.List(pl.List(pl.String))})


def test_corpus_source_replaces_its_own_stale_shards_and_keeps_user_files(tmp_path, tiny):
    settings = tiny(StorageSettings(uri=f"file://{tmp_path}/store"))
    store = ObjectStore(settings.storage)
    layout.put_parquet(store, layout.shard_source_key("shard-00009"), USER_SHARD)   # from an earlier, finer split
    layout.put_parquet(store, layout.shard_source_key("arrivals-2026-11"), USER_SHARD)  # dropped in by a user
    resources = build_resources(settings)
    dg.materialize([corpus_source], resources={k: resources[k] for k in ("pipeline", "object_store")})
    assert discover_shards(store) == ["arrivals-2026-11", "shard-00000", "shard-00001"]
    rows = sum(layout.get_parquet(store, layout.shard_source_key(s)).height for s in ["shard-00000", "shard-00001"])
    assert rows == settings.data.n_corpus

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus_shards", ["shard-00009"])
    assert register_shards(instance, store) == ["arrivals-2026-11", "shard-00000", "shard-00001"]
    assert sorted(instance.get_dynamic_partitions("corpus_shards")) == ["arrivals-2026-11", "shard-00000", "shard-00001"]

    instance.add_dynamic_partitions("corpus_shards", ["shard-00009"])
    with dg.build_sensor_context(instance=instance, resources={"object_store": resources["object_store"]}) as context:
        (request,) = corpus_shard_sensor(context).dynamic_partitions_requests
    assert isinstance(request, dg.DeleteDynamicPartitionsRequest) and list(request.partition_keys) == ["shard-00009"]


def test_gradient_index_prunes_rows_of_unregistered_shards(tmp_path, tiny):
    resources = build_resources(tiny(StorageSettings(uri=f"file://{tmp_path}/store")))
    store = resources["vector_store"]
    vectors = np.eye(4, dtype=np.float32)  # (4, 4)
    for shard, ids in [("kept", ["a", "b"]), ("removed", ["c", "d"])]:
        rows = table_rows(ids, shard, ids, vectors[:2])
        store.open_or_create_table(rows.schema)[0].add(rows)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus_shards", ["kept"])
    result = dg.materialize([gradient_index], resources=resources, instance=instance)
    assert result.asset_materializations_for_node("gradient_index")[0].metadata["pruned_rows"].value == 2
    assert sorted(store.open_table().to_arrow()["example_id"].to_pylist()) == ["a", "b"]


def test_a_new_projection_dim_recreates_the_table(tmp_path):
    store = VectorStore(uri=str(tmp_path / "lancedb"))
    old = table_rows(["a"], "s", ["a"], np.ones((1, 4), dtype=np.float32))
    store.open_or_create_table(old.schema)[0].add(old)
    new = table_rows(["a"], "s", ["a"], np.ones((1, 8), dtype=np.float32))
    table, recreated = store.open_or_create_table(new.schema)
    assert recreated and table.count_rows() == 0 and table.schema.field("vector").type.list_size == 8
