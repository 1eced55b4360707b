"""The whole graph against a real S3 server: objects land in the bucket, the table on S3 answers queries."""

import dagster as dg
import pytest

from trackstar_pipeline import pipeline_run
from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.vector_table import duplicate_ids
from trackstar_pipeline.resources import VectorStore
from trackstar_pipeline.storage import ObjectStore

pytestmark = pytest.mark.s3


def test_whole_graph_on_s3(s3_server, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKSTAR_CACHE", str(tmp_path / "cache"))
    storage = s3_server.storage("pipeline")
    settings = tiny(storage)
    report = pipeline_run.run_pipeline(settings, dagster_home=tmp_path / "home", progress=lambda _: None, in_process=True)
    assert report == f"s3://{s3_server.bucket}/pipeline/reports/report.md"

    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="pipeline/", MaxKeys=1000)
    keys = {item["Key"] for item in listed["Contents"]}
    for key in [layout.CORPUS_SOURCE, layout.QUERIES, layout.MODEL_MANIFEST, layout.INVERSE_SQRT, layout.PROPONENTS,
                "reports/report.md", "reports/evaluation.json", "reports/explorer.html",
                f"{layout.train_gradients_prefix('shard-00000')}/vectors.npy"]:
        assert f"pipeline/{key}" in keys, f"{key} not in the bucket"
    assert any(key.startswith("pipeline/lancedb/gradients.lance/") for key in keys)
    assert not (tmp_path / "store").exists()

    store = ObjectStore(storage)
    table = VectorStore.for_store(store).open_table()
    assert VectorStore.for_store(store).uri.startswith("s3://")
    assert duplicate_ids(table) == []
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    table_event = instance.get_latest_materialization_event(dg.AssetKey("gradient_table")).asset_materialization
    assert table_event.metadata["uri"].value == f"s3://{s3_server.bucket}/pipeline/lancedb"

    queries = layout.get_parquet(store, layout.QUERIES)
    proponents = layout.get_parquet(store, layout.PROPONENTS)
    query_id, prompt, completion = queries.select("id", "prompt", "completion").row(1)
    found = pipeline_run.query_table(settings, prompt=prompt, completion=completion, k=4)
    expected = proponents.filter(proponents["query_id"] == query_id).sort("rank").head(10)
    expected_scores = dict(zip(expected["example_id"].to_list(), expected["score"].to_list()))
    # The same ranking up to near-ties: a query's gradient alone and in a batch differ in float rounding.
    assert [hit["score"] for hit in found] == pytest.approx(expected["score"].head(4).to_list(), abs=1e-5)
    assert all(hit["score"] == pytest.approx(expected_scores[hit["id"]], abs=1e-5) for hit in found)
