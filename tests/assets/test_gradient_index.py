"""gradient_index on its own: exact search below search.ann_min_rows; above it an IVF index whose nprobes is
tuned on a sample of the stored queries until recall@k reaches the target (metadata + the ann_recall check)."""

import dataclasses

import dagster as dg
import numpy as np

from trackstar_pipeline.assets.index import gradient_index
from trackstar_pipeline.storage.vector_table import table_rows
from trackstar_pipeline.attribution.ann_index import load_ann_parameters
from trackstar_pipeline.attribution.table_search import search_table
from trackstar_pipeline.definitions import build_resources
from trackstar_pipeline.settings import PipelineSettings, SearchSettings, StorageSettings
from trackstar_pipeline.storage import ObjectStore, layout


def _setup(tmp_path, rows: int, search: SearchSettings, dim: int = 16) -> tuple[dict, ObjectStore, np.ndarray]:
    """A table of `rows` unit vectors and 20 stored query gradients near some of them (no curvature)."""
    settings = PipelineSettings(storage=StorageSettings(uri=f"file://{tmp_path}/store"), search=search)
    store = ObjectStore(settings.storage)
    resources = build_resources(settings)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, d) unit rows
    data = table_rows([f"e{i}" for i in range(rows)], "shard-00000", [f"text {i}" for i in range(rows)], vectors)
    resources["vector_store"].open_or_create_table(data.schema)[0].add(data)
    queries = vectors[:20] + 0.3 * rng.standard_normal((20, dim)).astype(np.float32)  # (20, d)
    layout.put_vectors(store, layout.QUERY_GRADIENTS, [f"q{i}" for i in range(20)], queries, {})
    layout.put_json(store, layout.CURVATURE_MANIFEST, {"enabled": False})
    return resources, store, vectors


def _materialize(resources: dict) -> tuple[dict, dict]:
    result = dg.materialize([gradient_index], resources=resources)
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("gradient_index")[0].metadata.items()}
    (check,) = result.get_asset_check_evaluations()
    return metadata, {"passed": check.passed, **{k: v.value for k, v in check.metadata.items()}}


def test_small_table_stays_exact(tmp_path):
    resources, store, vectors = _setup(tmp_path, 50, SearchSettings())
    metadata, check = _materialize(resources)
    assert metadata["index"] == "none (exact search)" and check["passed"] and check["search"] == "exact"
    table = resources["vector_store"].open_table()
    assert [index.columns for index in table.list_indices()] == [["example_id"]]  # the scalar index only
    assert load_ann_parameters(store) is None
    hits = search_table(table, vectors[7:8], k=1)[0]
    assert hits[0]["id"] == "e7" and abs(hits[0]["score"] - 1.0) < 2e-3


def test_large_table_gets_an_ivf_index_tuned_to_the_recall_target_then_drops_it_when_small_again(tmp_path):
    search = SearchSettings(ann_min_rows=1000, ann_partitions=33, ann_refine_factor=2, ann_recall_queries=12)
    resources, store, vectors = _setup(tmp_path, 1100, search)
    metadata, check = _materialize(resources)
    assert metadata["index"].startswith("IVF_FLAT (33 partitions")
    sweep = metadata["recall_sweep"]
    reached = [step["nprobes"] for step in sweep if step["recall"] >= search.ann_recall_target]
    assert reached and metadata["nprobes"] == reached[0] == sweep[-1]["nprobes"]  # the smallest nprobes that reaches it
    assert all(step["recall"] < search.ann_recall_target for step in sweep[:-1])
    assert check["passed"] and check["recall_at_k"] >= 0.95 and check["queries"] == 12
    ann = load_ann_parameters(store)
    assert ann is not None and ann.nprobes == metadata["nprobes"] and ann.recall == metadata["recall_at_k"]
    table = resources["vector_store"].open_table()
    assert "IvfFlat" in [index.index_type for index in table.list_indices()]
    hits = search_table(table, vectors[123:124], k=3, ann=ann)[0]
    assert hits[0]["id"] == "e123"

    bigger = PipelineSettings(storage=StorageSettings(uri=f"file://{tmp_path}/store"),
                              search=dataclasses.replace(search, ann_min_rows=5000))
    metadata, check = _materialize({**resources, "pipeline": build_resources(bigger)["pipeline"]})
    assert metadata["index"] == "none (exact search)" and check["passed"]
    assert [index.columns for index in resources["vector_store"].open_table().list_indices()] == [["example_id"]]
    assert load_ann_parameters(store) is None


def test_an_unreachable_recall_target_fails_the_check(tmp_path):
    search = SearchSettings(ann_min_rows=1000, ann_partitions=33, ann_index="ivf_pq", ann_refine_factor=0,
                            ann_recall_target=1.01, ann_recall_queries=8)
    resources, _, _ = _setup(tmp_path, 1100, search)
    metadata, check = _materialize(resources)
    assert metadata["index"].startswith("IVF_PQ") and metadata["nprobes"] == 33  # tried up to every partition
    assert not check["passed"] and check["recall_at_k"] <= 1.0
