"""One URI-addressed store for everything the pipeline writes: a local folder or an S3 prefix.

`file://./.trackstar` (the default) needs no set-up; `s3://bucket/prefix` talks to any
S3-compatible server through boto3 (path-style addressing, so SeaweedFS and MinIO work).
Keys are always '/'-separated paths relative to the store's root.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from trackstar_pipeline.settings import StorageSettings


class StorageError(RuntimeError):
    """The store cannot be reached or a key is missing; the message names the URI."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str


def parse_s3_uri(uri: str) -> S3Location:
    """Split 's3://bucket/some/prefix' into bucket and prefix (no leading/trailing '/')."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an s3://bucket/prefix URI")
    return S3Location(bucket=parsed.netloc, prefix=parsed.path.strip("/"))


def local_path_of(uri: str) -> Path:
    """Path of a plain path or file:// URI (file://./x is relative to the working directory)."""
    if uri.startswith("file://"):
        rest = uri[len("file://") :]
        return Path(rest)
    if "://" in uri:
        raise StorageError(f"{uri!r} is not a local path or file:// URI")
    return Path(uri)


def _credentials(settings: StorageSettings) -> dict[str, Any]:
    return {
        "endpoint_url": settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
        "aws_access_key_id": settings.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": settings.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "region_name": settings.region or os.environ.get("AWS_REGION", "us-east-1"),
    }


def s3_client(settings: StorageSettings) -> Any:
    """A boto3 client for path-style S3 with checksums only when required (for S3 clones)."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.client("s3", config=config, **_credentials(settings))


class ObjectStore:
    """Put, get and list objects under one root URI, on local disk or S3."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.root_uri = settings.uri.rstrip("/")
        self.is_s3 = self.root_uri.startswith("s3://")
        if self.is_s3:
            self._location = parse_s3_uri(self.root_uri)
            self._client = s3_client(settings)
        else:
            self._root = local_path_of(self.root_uri).resolve()

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "ObjectStore":
        return cls(StorageSettings(uri=uri, **kwargs))

    # --- addressing -------------------------------------------------------------------------
    def _s3_key(self, key: str) -> str:
        key = key.strip("/")
        return f"{self._location.prefix}/{key}" if self._location.prefix else key

    def _path(self, key: str) -> Path:
        return self._root / key.strip("/")

    def uri_for(self, key: str) -> str:
        """The full URI of a key, for metadata a person reads and for other tools."""
        if self.is_s3:
            return f"s3://{self._location.bucket}/{self._s3_key(key)}"
        return self._path(key).as_uri()

    # --- objects ----------------------------------------------------------------------------
    def check_reachable(self) -> None:
        """Fail early with a clear message when the bucket does not exist or cannot be reached."""
        if not self.is_s3:
            self._root.mkdir(parents=True, exist_ok=True)
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self._location.bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise StorageError(
                f"bucket {self._location.bucket!r} at {self.settings.endpoint_url or 'AWS'} "
                f"is not usable ({code or error}); create it or fix storage.uri"
            ) from error
        except BotoCoreError as error:
            raise StorageError(f"cannot reach S3 for {self.root_uri}: {error}") from error

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write an object atomically (a reader never sees half a file); returns its URI."""
        if self.is_s3:
            self._client.put_object(Bucket=self._location.bucket, Key=self._s3_key(key), Body=data)
        else:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        return self.uri_for(key)

    def get_bytes(self, key: str) -> bytes:
        if self.is_s3:
            from botocore.exceptions import ClientError

            try:
                response = self._client.get_object(Bucket=self._location.bucket, Key=self._s3_key(key))
            except ClientError as error:
                raise StorageError(f"cannot read {self.uri_for(key)}: {error}") from error
            return response["Body"].read()
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"{self.uri_for(key)} does not exist")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        if self.is_s3:
            from botocore.exceptions import ClientError

            try:
                self._client.head_object(Bucket=self._location.bucket, Key=self._s3_key(key))
                return True
            except ClientError:
                return False
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys (relative to the root) under a prefix, sorted."""
        if self.is_s3:
            full_prefix = self._s3_key(prefix) if prefix else (self._location.prefix + "/" if self._location.prefix else "")
            strip = len(self._location.prefix) + 1 if self._location.prefix else 0
            keys: list[str] = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._location.bucket, Prefix=full_prefix):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
            return sorted(keys)
        base = self._path(prefix) if prefix else self._root
        if base.is_file():
            return [prefix.strip("/")]
        if not base.exists():
            return []
        return sorted(
            str(path.relative_to(self._root)).replace(os.sep, "/")
            for path in base.rglob("*")
            if path.is_file() and not path.name.endswith(".partial")
        )

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a prefix (a re-run of a half-finished partition starts clean)."""
        keys = self.list_keys(prefix)
        if self.is_s3:
            for start in range(0, len(keys), 1000):
                batch = [{"Key": self._s3_key(key)} for key in keys[start : start + 1000]]
                self._client.delete_objects(Bucket=self._location.bucket, Delete={"Objects": batch})
        else:
            for key in keys:
                self._path(key).unlink(missing_ok=True)
        return len(keys)

    def put_file(self, key: str, path: Path) -> str:
        if self.is_s3:
            self._client.upload_file(str(path), self._location.bucket, self._s3_key(key))
            return self.uri_for(key)
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
        return self.uri_for(key)

    def get_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.is_s3:
            path.write_bytes(self.get_bytes(key))
        else:
            source = self._path(key)
            if not source.is_file():
                raise StorageError(f"{self.uri_for(key)} does not exist")
            shutil.copyfile(source, path)
        return path

    def upload_dir(self, directory: Path, prefix: str) -> list[str]:
        """Copy every file under a local folder to keys under prefix; returns the keys."""
        keys = []
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                key = f"{prefix.strip('/')}/{path.relative_to(directory).as_posix()}"
                self.put_file(key, path)
                keys.append(key)
        return keys

    def download_prefix(self, prefix: str, destination: Path) -> Path:
        """Copy every object under prefix into a local folder, keeping relative paths."""
        keys = self.list_keys(prefix)
        if not keys:
            raise StorageError(f"nothing stored under {self.uri_for(prefix)}")
        for key in keys:
            relative = key[len(prefix.strip("/")) :].lstrip("/")
            self.get_file(key, destination / relative)
        return destination

    def local_dir(self, key: str) -> Path:
        """A local folder for a key: the folder itself for file:// stores (no copy)."""
        if self.is_s3:
            raise StorageError("local_dir is only for file:// stores; use download_prefix for s3://")
        return self._path(key)

    # --- LanceDB ----------------------------------------------------------------------------
    def lancedb_uri(self) -> str:
        if self.is_s3:
            return self.uri_for("lancedb")
        return str(self._path("lancedb"))

    def lancedb_storage_options(self) -> dict[str, str]:
        """Options LanceDB's object-store layer needs for an S3-compatible endpoint."""
        if not self.is_s3:
            return {}
        credentials = _credentials(self.settings)
        options = {"region": credentials["region_name"] or "us-east-1"}
        if credentials["endpoint_url"]:
            options["endpoint"] = credentials["endpoint_url"]
            options["allow_http"] = str(credentials["endpoint_url"].startswith("http://")).lower()
            options["virtual_hosted_style_request"] = "false"
        if credentials["aws_access_key_id"]:
            options["aws_access_key_id"] = credentials["aws_access_key_id"]
            options["aws_secret_access_key"] = credentials["aws_secret_access_key"] or ""
        return options


def _bucket_store(uri: str, storage: StorageSettings | None) -> tuple[ObjectStore, str]:
    """A store rooted at the bucket of an s3:// URI (credentials from `storage`) and the key inside it."""
    location = parse_s3_uri(uri)
    base = storage or StorageSettings()
    return ObjectStore(dataclasses.replace(base, uri=f"s3://{location.bucket}")), location.prefix


def read_uri_bytes(uri: str, storage: StorageSettings | None = None) -> bytes:
    """Bytes of a single file named by a local path, file:// or s3:// URI."""
    if uri.startswith("s3://"):
        store, key = _bucket_store(uri, storage)
        return store.get_bytes(key)
    path = local_path_of(uri)
    if not path.is_file():
        raise StorageError(f"{uri} does not exist or is not a file")
    return path.read_bytes()


def materialize_local(uri: str, storage: StorageSettings | None = None, cache_dir: Path | None = None) -> Path:
    """A local path for a file or folder URI; s3:// objects are copied into a cache folder first."""
    if not uri.startswith("s3://"):
        path = local_path_of(uri)
        if not path.exists():
            raise StorageError(f"{uri} does not exist")
        return path
    store, key = _bucket_store(uri, storage)
    cache = cache_dir or Path(os.environ.get("TRACKSTAR_CACHE", Path.home() / ".cache" / "trackstar"))
    destination = cache / store._location.bucket / key
    if store.exists(key):
        return store.get_file(key, destination)
    return store.download_prefix(key, destination)
