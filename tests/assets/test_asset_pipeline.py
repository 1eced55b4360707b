"""The whole graph on a tiny configuration: file:// store, re-materialization, parallel shards, automation."""

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from trackstar_pipeline import pipeline_run
from trackstar_pipeline.storage import layout
from trackstar_pipeline.assets.corpus import corpus_shard_sensor
from trackstar_pipeline.assets.index import gradient_table
from trackstar_pipeline.storage.vector_table import duplicate_ids
from trackstar_pipeline.storage.artifacts import load_sources
from trackstar_pipeline.definitions import build_definitions, build_resources
from trackstar_pipeline.resources import VectorStore
from trackstar_pipeline.settings import StorageSettings
from trackstar_pipeline.storage import ObjectStore


def table_contents(settings) -> dict[str, tuple[str, bytes]]:
    """example_id -> (shard, float16 vector bytes): what 'the same table' means."""
    table = VectorStore.for_store(ObjectStore(settings.storage)).open_table().to_arrow()
    vectors = np.asarray(table["vector"].combine_chunks().flatten(), dtype=np.float16).reshape(table.num_rows, -1)
    return {i: (s, v.tobytes()) for i, s, v in zip(table["example_id"].to_pylist(), table["shard"].to_pylist(), vectors)}


@pytest.fixture
def pipeline(tiny_run):
    """The shared tiny run, read-only: (settings, instance, report path, progress messages)."""
    return tiny_run.settings, tiny_run.instance(), tiny_run.report, tiny_run.messages


@pytest.fixture
def pipeline_copy(run_copy):
    """A private copy of the tiny run for tests that change it: (settings, instance, report path, messages)."""
    return run_copy.settings, run_copy.instance(), run_copy.report, run_copy.messages


def test_every_asset_is_materialized_with_metadata(pipeline):
    settings, instance, report, messages = pipeline
    graph = build_definitions(settings).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert instance.get_latest_materialization_event(key) is not None, f"{key.to_user_string()} never materialized"
    table_event = instance.get_latest_materialization_event(dg.AssetKey("gradient_table")).asset_materialization
    assert table_event.metadata["table_version"].value >= 1
    model_event = instance.get_latest_materialization_event(dg.AssetKey("model_checkpoint")).asset_materialization
    assert "epochs planned" in model_event.metadata["training_plan"].value
    assert model_event.metadata["parameters"].value > 0 and model_event.metadata["steps"].value > 0
    assert model_event.metadata["context_length"].value >= settings.training.max_length  # every row read whole
    assert model_event.metadata["corpus_rows_cut"].value == 0
    assert any("shard" in message for message in messages)
    assert Path(report).name == "report.md"


def test_table_holds_every_corpus_row_once_with_unit_norms(pipeline):
    settings, instance, _, _ = pipeline
    corpus, _, _ = load_sources(settings.data)
    contents = table_contents(settings)
    assert sorted(contents) == sorted(corpus["id"].to_list())
    table = VectorStore.for_store(ObjectStore(settings.storage)).open_table()
    assert duplicate_ids(table) == []
    vectors = np.stack([np.frombuffer(v, dtype=np.float16).astype(np.float32) for _, v in contents.values()])
    assert vectors.shape[1] == settings.attribution.projection_dim
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=5e-3)
    shards = instance.get_dynamic_partitions("corpus_shards")
    assert len(shards) == 2
    for shard in shards:
        size = layout.get_json(ObjectStore(settings.storage), f"{layout.train_gradients_prefix(shard)}/manifest.json")["rows"]
        assert table.count_rows(f"shard = '{shard}'") == size


def test_checks_passed(pipeline):
    settings, instance, _, _ = pipeline
    for asset, check in [("gradient_table", "no_duplicate_example_ids"), ("gradient_table", "rows_match_shard"),
                         ("gradient_table", "norms_finite"), ("projected_gradients", "norms_finite"),
                         ("curvature_inverse_sqrt", "r_spd_after_damping")]:
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=10)
        assert records, f"{asset}:{check} never ran"
        assert {r.status.value for r in records} == {"SUCCEEDED"}, f"{asset}:{check}: {[r.status for r in records]}"


def test_query_answers_from_the_table_like_the_proponents_asset(pipeline):
    settings, _, _, _ = pipeline
    store = ObjectStore(settings.storage)
    queries = layout.get_parquet(store, layout.QUERIES)
    proponents = layout.get_parquet(store, layout.PROPONENTS)
    query_id, prompt, completion = queries.select("id", "prompt", "completion").row(0)
    found = pipeline_run.query_table(settings, prompt=prompt, completion=completion, k=3)
    expected = proponents.filter(proponents["query_id"] == query_id).sort("rank").head(3)
    assert [hit["id"] for hit in found] == expected["example_id"].to_list()
    np.testing.assert_allclose([hit["score"] for hit in found], expected["score"].to_list(), atol=1e-5)
    assert all(hit["text"] for hit in found)


def test_rematerializing_a_shard_leaves_no_duplicates(pipeline_copy):
    settings, instance, _, _ = pipeline_copy
    before = table_contents(settings)
    shard = sorted(instance.get_dynamic_partitions("corpus_shards"))[0]
    pipeline_run.materialize_assets(instance, settings, ["gradient_table"], partition=shard, in_process=True)
    table = VectorStore.for_store(ObjectStore(settings.storage)).open_table()
    assert duplicate_ids(table) == []
    assert table_contents(settings) == before


@pytest.mark.slow
def test_parallel_shards_with_multiprocess_executor_match_serial(pipeline_copy):
    settings, instance, _, _ = pipeline_copy
    serial = table_contents(settings)
    VectorStore.for_store(ObjectStore(settings.storage)).connect().drop_table("gradients")
    shards = sorted(instance.get_dynamic_partitions("corpus_shards"))
    home = Path(instance.root_directory)
    finished = list(pipeline_run.materialize_shards(home, settings, ["gradient_table"], shards, parallel=2))
    assert sorted(finished) == shards
    assert table_contents(settings) == serial
    # Both shards ran as their own runs, and every gradient_table step writes under the one-slot lancedb pool.
    # (Not asserted: that the two steps never overlap in time. Dagster's sqlite slot claim raced once in CI,
    # both steps starting 26 ms apart; the table then still equalled the serial one, as asserted above,
    # because LanceDB commits concurrent appends with conflict retries.)
    runs = instance.get_runs(limit=2)
    assert {run.tags["dagster/partition"] for run in runs} == set(shards)
    assert gradient_table.op.pool == "lancedb"
    assert instance.event_log_storage.get_concurrency_info("lancedb").slot_count == 1


def test_sensor_registers_a_new_shard_and_automation_materializes_it(pipeline_copy):
    settings, instance, _, _ = pipeline_copy
    store = ObjectStore(settings.storage)
    corpus, _, _ = load_sources(settings.data)
    new_rows = corpus.head(5).with_columns(("new-" + corpus.head(5)["id"]).alias("id"))
    layout.put_parquet(store, layout.shard_source_key("shard-new"), new_rows)

    defs = build_definitions(settings)
    # The automation sensor has been ticking before the shard lands: nothing to do yet.
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    resources = build_resources(settings)
    with dg.build_sensor_context(instance=instance, resources={"object_store": resources["object_store"]}) as context:
        result = corpus_shard_sensor(context)
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == ["shard-new"]
    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    with dg.build_sensor_context(instance=instance, resources={"object_store": resources["object_store"]}) as context:
        assert not corpus_shard_sensor(context).dynamic_partitions_requests

    materialized = []
    for _ in range(4):
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = evaluation.cursor
        requested = {key.to_user_string(): evaluation.get_requested_partitions(key)
                     for key in defs.resolve_asset_graph().get_all_asset_keys() if evaluation.get_num_requested(key)}
        if not requested:
            break
        for asset, partitions in requested.items():
            assert partitions == {"shard-new"}, f"automation asked for {asset} {partitions}"
        # What the automation sensor launches: one run per partition with everything requested this tick.
        pipeline_run.materialize_assets(instance, settings, list(requested), partition="shard-new", in_process=True)
        materialized.extend(requested)
    assert sorted(materialized) == ["corpus_shards", "gradient_table", "projected_gradients"]
    table = VectorStore.for_store(store).open_table()
    assert table.count_rows("shard = 'shard-new'") == 5
    assert duplicate_ids(table) == []


def test_new_checkpoint_makes_every_shard_due_again(pipeline_copy):
    """A new checkpoint version (recorded in a copy of the run) makes every shard's tokenization due."""
    settings, instance, _, _ = pipeline_copy
    store = ObjectStore(settings.storage)
    event = instance.get_latest_materialization_event(dg.AssetKey("model_checkpoint")).asset_materialization
    assert event.tags["dagster/data_version"] == layout.get_json(store, layout.MODEL_MANIFEST)["model_version"]
    defs = build_definitions(settings)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    instance.report_runless_asset_event(
        dg.AssetMaterialization("model_checkpoint", tags={"dagster/data_version": "new-weights"}))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    shards = set(instance.get_dynamic_partitions("corpus_shards"))
    assert result.get_requested_partitions(dg.AssetKey("corpus_shards")) == shards


def _related(read: str, written: str) -> bool:
    """A read key and a written key (or prefix) name the same objects."""
    read, written = read.rstrip("/"), written.rstrip("/")
    return read == written or read.startswith(written + "/") or written.startswith(read + "/")


def test_every_store_key_an_asset_reads_belongs_to_an_asset_it_declares_upstream(tiny_run):
    graph = build_definitions(tiny_run.settings).resolve_asset_graph()
    upstream = {key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
                for key in graph.get_all_asset_keys()}
    reads, writes = tiny_run.access.reads, tiny_run.access.writes
    assert len(reads) >= 12 and "gradients/queries/vectors.npy" in reads[frozenset({"evaluation_report"})]
    undeclared = []
    for step, keys in reads.items():
        declared = set(step).union(*(upstream[asset] for asset in step))
        for key in keys:
            writers = {asset for writer, written in writes.items() if any(_related(key, w) for w in written)
                       for asset in writer}
            if not writers:
                undeclared.append((sorted(step), key, "written by no asset"))
            elif not writers & declared:
                undeclared.append((sorted(step), key, f"written by {sorted(writers)}"))
    assert undeclared == []


def test_report_lineage_declares_what_it_reads():
    from trackstar_pipeline.settings import PipelineSettings

    graph = build_definitions(PipelineSettings()).resolve_asset_graph()
    parents = {key.to_user_string() for key in graph.get(dg.AssetKey("evaluation_report")).parent_keys}
    assert {"query_gradients", "curvature_inverse_sqrt", "r_train", "r_eval", "gradient_table", "proponents",
            "corpus_shards", "model_checkpoint", "optimizer_state"} <= parents


def test_stages_of_trackstar_run_follow_the_asset_graph(tiny_run):
    stages = pipeline_run.pipeline_stages(tiny_run.settings)
    order = [asset for stage in stages for asset in stage.assets]
    graph = build_definitions(tiny_run.settings).resolve_asset_graph()
    assert sorted(order) == sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            assert order.index(parent.to_user_string()) < order.index(key.to_user_string())
    per_shard = {asset for stage in stages if stage.per_shard for asset in stage.assets}
    assert per_shard == {"corpus_shards", "projected_gradients", "gradient_table"}
    assert [stage.per_shard for stage in stages] == [False, True, False, True, False]


def test_ablation_without_curvature_is_the_table_without_r(tiny_run):
    """trackstar_no_curvature's corpus vectors are the table's rows with R^{-1/2} undone (same run, same gradients)."""
    import torch

    from trackstar_pipeline.evaluation.ablations import trackstar_methods
    from trackstar_pipeline.evaluation.stream import SHARD_COLUMNS, ShardRows
    from trackstar_pipeline.storage.artifacts import load_inverse_sqrt, load_table_gradients, stored_corpus

    settings, store = tiny_run.settings, ObjectStore(tiny_run.settings.storage)
    corpus = stored_corpus(store, sorted(tiny_run.instance().get_dynamic_partitions("corpus_shards")))
    stored = load_table_gradients(store, settings.storage)
    methods, _, _ = trackstar_methods(stored, stored.query_ids, settings.attribution)
    shards = [ShardRows(name, corpus.read(name, SHARD_COLUMNS), corpus) for name in corpus.names]
    ids = [example_id for shard in shards for example_id in shard.ids]
    ablation = torch.cat([methods["trackstar_no_curvature"].corpus_vectors(shard) for shard in shards])  # (N, d)
    table = table_contents(settings)
    rows = torch.tensor(np.stack([np.frombuffer(table[i][1], dtype=np.float16).astype(np.float32)
                                  for i in ids]))  # (N, d) unit(R^{-1/2} g)
    inverse = load_inverse_sqrt(store, settings.storage).to_dense()  # (d, d), block-diagonal
    undone = rows @ torch.linalg.inv(inverse.double()).float()  # (N, d) proportional to g
    undone = undone / undone.norm(dim=1, keepdim=True)
    torch.testing.assert_close(ablation, undone, atol=2e-2, rtol=0)
    # and R changes them: the table is not already the no-curvature variant
    assert (rows - ablation).abs().max() > 0.1


def test_trackstar_query_imports_no_dagster_layer(tiny_run, tmp_path):
    """`trackstar query` in a fresh process answers from the table without importing assets, resources or Dagster."""
    import json
    import subprocess
    import sys

    from trackstar_pipeline.settings import settings_to_dict

    config = tmp_path / "settings.json"
    config.write_text(json.dumps(settings_to_dict(tiny_run.settings)))
    prompt, completion = layout.get_parquet(ObjectStore(tiny_run.settings.storage), layout.QUERIES).select(
        "prompt", "completion").row(0)
    script = (
        "import sys; from trackstar_pipeline import cli\n"
        f"assert cli.main(['query', '--config', {str(config)!r}, '--prompt', {prompt!r}, '--completion', "
        f"{completion!r}, '-k', '2']) == 0\n"
        "print('LAYER', sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'"
        " or m.startswith(('trackstar_pipeline.assets', 'trackstar_pipeline.resources'))))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True).stdout
    lines = output.strip().splitlines()
    assert len([line for line in lines if line.strip()[:3].strip().isdigit()]) == 2  # two ranked proponents
    assert lines[-1] == "LAYER []"


def test_run_ends_with_each_assets_time_from_dagsters_step_records(tiny_run):
    """The closing table names every materialized asset once, with the seconds Dagster recorded for its steps."""
    start = tiny_run.messages.index(next(m for m in tiny_run.messages if m.startswith("time per asset")))
    rows = [line.split() for line in tiny_run.messages[start + 1:] if line.startswith("  ")]
    timed = {row[0]: float(row[1]) for row in rows}
    definitions = build_definitions(tiny_run.settings)
    expected = {definitions.get_assets_def(dg.AssetKey(name)).node_def.name  # an op may make several assets
                for stage in pipeline_run.pipeline_stages(tiny_run.settings) for name in stage.assets}
    assert set(timed) == expected and "evaluation_report" in timed
    assert all(seconds >= 0 for seconds in timed.values())
    assert list(timed.values()) == sorted(timed.values(), reverse=True)
