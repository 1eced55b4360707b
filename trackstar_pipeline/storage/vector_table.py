"""The LanceDB gradient table: where it lives, its schema, opening it (engine code, no Dagster).

The VectorStore resource and `trackstar query` both open the table through these functions, so a
library user reaches the table without the orchestration layer.
"""

from __future__ import annotations

from typing import Any, Mapping

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trackstar_pipeline.storage.object_store import ObjectStore

GRADIENT_TABLE = "gradients"


def gradient_table_schema(dim: int) -> pa.Schema:
    """example_id, shard, text and the unit-norm R^{-1/2} g vector as fixed_size_list<float16>[d]."""
    return pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float16(), dim)),
    ])


def connect(uri: str, storage_options: Mapping[str, str] | None = None) -> Any:
    """A LanceDB connection to a local folder or s3:// prefix."""
    return lancedb.connect(uri, storage_options=dict(storage_options) if storage_options else None)


def open_gradient_table(uri: str, storage_options: Mapping[str, str] | None = None,
                        table_name: str = GRADIENT_TABLE) -> Any:
    """The gradient table; a clear error when no shard has been written yet."""
    try:
        return connect(uri, storage_options).open_table(table_name)
    except (FileNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"LanceDB table {table_name!r} not found at {uri}; materialize gradient_table first (trackstar run)"
        ) from error


def open_store_table(store: ObjectStore, table_name: str = GRADIENT_TABLE) -> Any:
    """The gradient table kept in a store's lancedb/ folder (where `trackstar run` writes it)."""
    return open_gradient_table(store.lancedb_uri(), store.lancedb_storage_options(), table_name)


def open_or_create_table(uri: str, schema: pa.Schema, storage_options: Mapping[str, str] | None = None,
                         table_name: str = GRADIENT_TABLE) -> tuple[Any, bool]:
    """(table, recreated): a table whose schema differs (e.g. a new projection dim) is replaced, empty."""
    db = connect(uri, storage_options)
    try:
        table = db.create_table(table_name, schema=schema, exist_ok=True)
    except ValueError:  # exists with another schema
        return db.create_table(table_name, schema=schema, mode="overwrite"), True
    if table.schema.equals(schema):
        return table, False
    return db.create_table(table_name, schema=schema, mode="overwrite"), True


def table_rows(ids: list[str], shard: str, texts: list[str], vectors: np.ndarray) -> pa.Table:
    """Arrow rows for one shard; vectors (N, d) are stored as float16."""
    dim = vectors.shape[1]
    flat = pa.array(vectors.astype(np.float16).ravel(), type=pa.float16())  # (N * d,)
    return pa.table({
        "example_id": pa.array(ids, pa.string()),
        "shard": pa.array([shard] * len(ids), pa.string()),
        "text": pa.array(texts, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    }, schema=gradient_table_schema(dim))


def duplicate_ids(table, ids: list[str] | None = None) -> list[str]:
    """Those of `ids` (a shard's example_ids) that occur more than once in the table, reading only rows with these
    ids; ids=None audits the whole table's example_id column (tests, one-off checks)."""
    from trackstar_pipeline.attribution.table_search import rows_with_ids

    if ids is None:
        found = table.search().select(["example_id"]).limit(None).to_arrow()["example_id"]
    else:
        found = rows_with_ids(table, ids, ["example_id"])["example_id"]
    counts = pc.value_counts(found)
    return [str(item["values"]) for item in counts.to_pylist() if item["counts"] > 1]
