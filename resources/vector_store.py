"""LanceDB connection (local folder or s3:// with storage options) as a Dagster resource."""

from __future__ import annotations

from typing import Any

import lancedb
import pyarrow as pa
from dagster import ConfigurableResource

from trackstar_pipeline.storage import ObjectStore

GRADIENT_TABLE = "gradients"


class VectorStore(ConfigurableResource):
    """Where the gradient table lives: by default the store's lancedb/ folder."""

    uri: str
    storage_options: dict[str, str] = {}
    table_name: str = GRADIENT_TABLE

    @classmethod
    def for_store(cls, store: ObjectStore) -> "VectorStore":
        return cls(uri=store.lancedb_uri(), storage_options=store.lancedb_storage_options())

    def connect(self) -> Any:
        return lancedb.connect(self.uri, storage_options=self.storage_options or None)

    def open_table(self) -> Any:
        """The gradient table; a clear error when no shard has been written yet."""
        db = self.connect()
        try:
            return db.open_table(self.table_name)
        except (FileNotFoundError, ValueError) as error:
            raise FileNotFoundError(
                f"LanceDB table {self.table_name!r} not found at {self.uri}; materialize gradient_table first"
            ) from error

    def open_or_create_table(self, schema: pa.Schema) -> tuple[Any, bool]:
        """(table, recreated): a table whose schema differs (e.g. a new projection dim) is replaced, empty."""
        db = self.connect()
        try:
            table = db.create_table(self.table_name, schema=schema, exist_ok=True)
        except ValueError:  # exists with another schema
            return db.create_table(self.table_name, schema=schema, mode="overwrite"), True
        if table.schema.equals(schema):
            return table, False
        return db.create_table(self.table_name, schema=schema, mode="overwrite"), True


def gradient_table_schema(dim: int) -> pa.Schema:
    """example_id, shard, text and the unit-norm R^{-1/2} g vector as fixed_size_list<float16>[d]."""
    return pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float16(), dim)),
    ])
