"""The LanceDB gradient table: where it lives, its schema, opening it (engine code, no Dagster).

The VectorStore resource and `trackstar query` both open the table through these functions, so a
library user reaches the table without the orchestration layer.
"""

from __future__ import annotations

from typing import Any, Mapping

import lancedb
import pyarrow as pa

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
