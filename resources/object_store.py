"""The pipeline's one object store (file:// or s3://) as a Dagster resource."""

from __future__ import annotations

import dataclasses

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from trackstar_pipeline.settings import StorageSettings
from trackstar_pipeline.storage import ObjectStore


class ObjectStoreResource(ConfigurableResource):
    """Builds the lead's ObjectStore from one URI (plus endpoint and keys for S3)."""

    uri: str = "file://./.trackstar"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"

    _store: ObjectStore | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> "ObjectStoreResource":
        return cls(**dataclasses.asdict(settings))

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._store = ObjectStore(self.storage_settings())

    def storage_settings(self) -> StorageSettings:
        return StorageSettings(**{field.name: getattr(self, field.name)
                                  for field in dataclasses.fields(StorageSettings)})

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore(self.storage_settings())
        return self._store
