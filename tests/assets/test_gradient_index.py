"""gradient_index on its own: an IVF index once the table is big enough, exact search below that."""

import dagster as dg
import numpy as np

from trackstar_pipeline.assets.index import ANN_MIN_ROWS, gradient_index, table_rows
from trackstar_pipeline.attribution.table_search import search_table
from trackstar_pipeline.resources import VectorStore


def _table(tmp_path, rows: int, dim: int = 16) -> tuple[VectorStore, np.ndarray]:
    vectors = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, d) unit rows
    store = VectorStore(uri=str(tmp_path / "lancedb"))
    data = table_rows([f"e{i}" for i in range(rows)], "shard-00000", [f"text {i}" for i in range(rows)], vectors)
    store.open_or_create_table(data.schema)[0].add(data)
    return store, vectors


def test_small_table_stays_exact(tmp_path):
    store, vectors = _table(tmp_path, 50)
    result = dg.materialize([gradient_index], resources={"vector_store": store})
    metadata = result.asset_materializations_for_node("gradient_index")[0].metadata
    assert metadata["index"].value == "none (exact search)"
    assert store.open_table().list_indices() == []
    hits = search_table(store.open_table(), vectors[7:8], k=1)[0]
    assert hits[0]["id"] == "e7" and abs(hits[0]["score"] - 1.0) < 2e-3


def test_large_table_gets_an_ivf_index_and_still_finds_the_row(tmp_path):
    store, vectors = _table(tmp_path, ANN_MIN_ROWS + 100)
    result = dg.materialize([gradient_index], resources={"vector_store": store})
    metadata = result.asset_materializations_for_node("gradient_index")[0].metadata
    assert metadata["index"].value.startswith("IVF_FLAT")
    assert [index.index_type for index in store.open_table().list_indices()] == ["IvfFlat"]
    hits = search_table(store.open_table(), vectors[123:124], k=3, exact=False)[0]
    assert hits[0]["id"] == "e123"
