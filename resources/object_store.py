"""The pipeline's one object store (file:// or s3://) as a Dagster resource."""

from __future__ import annotations

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
        return cls(
            uri=settings.uri,
            endpoint_url=settings.endpoint_url,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            region=settings.region,
        )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._store = ObjectStore(self.storage_settings())

    def storage_settings(self) -> StorageSettings:
        return StorageSettings(
            uri=self.uri,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
        )

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore(self.storage_settings())
        return self._store
