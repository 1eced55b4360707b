"""LanceDB connection (local folder or s3:// with storage options) as a Dagster resource."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dagster import ConfigurableResource

from trackstar_pipeline.storage import ObjectStore, vector_table
from trackstar_pipeline.storage.vector_table import GRADIENT_TABLE, gradient_table_schema

__all__ = ["GRADIENT_TABLE", "VectorStore", "gradient_table_schema"]


class VectorStore(ConfigurableResource):
    """Where the gradient table lives: by default the store's lancedb/ folder (opened by the engine's vector_table)."""

    uri: str
    storage_options: dict[str, str] = {}
    table_name: str = GRADIENT_TABLE

    @classmethod
    def for_store(cls, store: ObjectStore) -> "VectorStore":
        return cls(uri=store.lancedb_uri(), storage_options=store.lancedb_storage_options())

    def connect(self) -> Any:
        return vector_table.connect(self.uri, self.storage_options)

    def open_table(self) -> Any:
        """The gradient table; a clear error when no shard has been written yet."""
        return vector_table.open_gradient_table(self.uri, self.storage_options, self.table_name)

    def open_or_create_table(self, schema: pa.Schema) -> tuple[Any, bool]:
        """(table, recreated): a table whose schema differs (e.g. a new projection dim) is replaced, empty."""
        return vector_table.open_or_create_table(self.uri, schema, self.storage_options, self.table_name)
