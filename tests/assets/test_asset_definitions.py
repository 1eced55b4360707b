"""The code location loads, holds every stage, and swaps resources by settings only."""

import dagster as dg
import pytest

from trackstar_pipeline import definitions
from trackstar_pipeline.resources import TorchDevice, resolve_device
from trackstar_pipeline.settings import PipelineSettings, StorageSettings

STAGES = {"corpus_source", "queries", "corpus_shards", "model_checkpoint", "optimizer_state", "projected_gradients",
          "query_gradients", "r_train", "r_eval", "curvature_inverse_sqrt", "gradient_table", "gradient_index",
          "proponents", "bm25_proponents"}


def test_definitions_validate_loadable_with_every_stage():
    dg.Definitions.validate_loadable(definitions.defs)
    keys = {key.to_user_string() for key in definitions.defs.resolve_asset_graph().get_all_asset_keys()}
    assert STAGES <= keys


def test_partitions_pools_and_checks_are_declared():
    graph = definitions.defs.resolve_asset_graph()
    partitioned = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).partitions_def}
    assert partitioned == {"corpus_shards", "projected_gradients", "gradient_table"}
    by_key = {key.to_user_string(): assets_def for assets_def in definitions.defs.assets for key in assets_def.keys}
    assert by_key["projected_gradients"].op.pool == "gpu"
    assert by_key["gradient_table"].op.pool == "lancedb"
    checks = {check.name for check in by_key["gradient_table"].check_specs}
    assert checks == {"no_duplicate_example_ids", "rows_match_shard", "norms_finite"}


def test_resources_follow_the_storage_uri(tmp_path):
    local = definitions.build_resources(PipelineSettings(storage=StorageSettings(uri=f"file://{tmp_path}/store")))
    assert local["vector_store"].uri == str(tmp_path / "store" / "lancedb")
    assert local["vector_store"].storage_options == {}
    remote = definitions.build_resources(PipelineSettings(storage=StorageSettings(
        uri="s3://bucket/run1", endpoint_url="http://127.0.0.1:1", access_key_id="k", secret_access_key="s")))
    assert remote["vector_store"].uri == "s3://bucket/run1/lancedb"
    assert remote["vector_store"].storage_options["endpoint"] == "http://127.0.0.1:1"
    assert remote["vector_store"].storage_options["allow_http"] == "true"
    assert remote["pipeline"].settings.storage.uri == "s3://bucket/run1"


def test_torch_device_resolves_once_in_setup():
    resource = TorchDevice(device="cpu")
    with dg.build_init_resource_context() as context:
        resource.setup_for_execution(context)
    assert resource.torch_device.type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("tpu-9")


def test_settings_saved_in_dagster_home_drive_the_code_location(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACKSTAR_CONFIG", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / definitions.SETTINGS_FILE).write_text('{"storage": {"uri": "s3://b/p"}, "data": {"shard_size": 7}}')
    settings = definitions.settings_from_environment()
    assert settings.storage.uri == "s3://b/p" and settings.data.shard_size == 7
