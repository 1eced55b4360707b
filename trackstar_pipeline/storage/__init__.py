"""URI-based storage: file:// (default) or s3:// through boto3."""

from trackstar_pipeline.storage.object_store import (
    ObjectStore,
    StorageError,
    local_path_of,
    materialize_local,
    parse_s3_uri,
    read_uri_bytes,
    s3_client,
)

__all__ = [
    "ObjectStore",
    "StorageError",
    "local_path_of",
    "materialize_local",
    "parse_s3_uri",
    "read_uri_bytes",
    "s3_client",
]
