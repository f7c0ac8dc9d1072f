"""A model store under a prefix of an S3 bucket, such as MinIO.

S3 writes each object atomically but has no rename, so a version's objects are
all written before the pointer object, which is written last: a reader that
follows the pointer finds every file of the version it names.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.store.base import ModelStore
from training.store.errors import (
    FileTooLargeError,
    StoreError,
    StoreUnavailableError,
)
from training.store.layout import (
    MAX_METADATA_BYTES,
    POINTER_NAME,
    VERSIONS_DIR,
    is_version,
)

log = logging.getLogger(__name__)

_ABSENT = {"NoSuchKey", "NoSuchBucket"}


class S3Settings(BaseSettings):
    """How to reach the S3 endpoint; the chart fills these from a Secret."""

    model_config = SettingsConfigDict(env_prefix="IRIS_S3_")

    endpoint: str = Field(
        "http://127.0.0.1:9000",
        description="URL of the S3 endpoint; https:// turns TLS on.",
    )
    access_key_id: SecretStr | None = Field(None, description="Access key id.")
    secret_access_key: SecretStr | None = Field(None, description="Secret key.")
    region: str = Field("us-east-1", description="Region used to sign requests.")
    timeout_seconds: float = Field(
        10.0, gt=0, description="Connect and read timeout of each request."
    )


class BucketStore(ModelStore):
    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        self.prefix = prefix.strip("/")
        super().__init__(
            f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        )
        self.bucket = bucket
        self.endpoint = settings.endpoint
        endpoint = urlsplit(settings.endpoint)
        if endpoint.scheme not in {"http", "https"} or not endpoint.netloc:
            raise StoreError(
                f"IRIS_S3_ENDPOINT must be an http:// or https:// URL, "
                f"got {settings.endpoint!r}"
            )
        self.client = Minio(
            endpoint.netloc,
            access_key=_reveal(settings.access_key_id),
            secret_key=_reveal(settings.secret_access_key),
            secure=endpoint.scheme == "https",
            region=settings.region,
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(
                    connect=settings.timeout_seconds, read=settings.timeout_seconds
                ),
                retries=urllib3.Retry(
                    total=2, backoff_factor=0.2, status_forcelist=[502, 503, 504]
                ),
            ),
        )

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _requests(self, what: str) -> Iterator[None]:
        """Turn the S3 client's failures into StoreErrors that say what to fix."""
        try:
            yield
        except S3Error as error:
            raise StoreUnavailableError(
                f"{what}: {self.endpoint} refused the request: {error.code}: "
                f"{error.message}"
            ) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise StoreUnavailableError(
                f"{what}: cannot reach {self.endpoint}: {error}"
            ) from error

    def read(self, key: str, max_bytes: int = MAX_METADATA_BYTES) -> bytes | None:
        with self._requests(self.locate(key)):
            try:
                response = self.client.get_object(self.bucket, self._object(key))
            except S3Error as error:
                if error.code in _ABSENT:
                    return None
                raise
            try:
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > max_bytes:
                    raise FileTooLargeError(self.locate(key), max_bytes)
                # The body is streamed: read no more than one byte past the limit.
                data: bytes = response.read(max_bytes + 1)
            finally:
                response.close()
                response.release_conn()
        if len(data) > max_bytes:
            raise FileTooLargeError(self.locate(key), max_bytes)
        return data

    def exists(self, key: str) -> bool:
        with self._requests(self.locate(key)):
            try:
                self.client.stat_object(self.bucket, self._object(key))
            except S3Error as error:
                if error.code in _ABSENT:
                    return False
                raise
        return True

    def write_version(self, version: str, files: Mapping[str, bytes]) -> None:
        with self._requests(self.uri):
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
                log.info("created bucket=%s endpoint=%s", self.bucket, self.endpoint)
            for name, data in files.items():
                self._put(f"{VERSIONS_DIR}/{version}/{name}", data)

    def write_pointer(self, data: bytes) -> None:
        with self._requests(self.locate(POINTER_NAME)):
            self._put(POINTER_NAME, data)

    def _put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            self.bucket, self._object(key), io.BytesIO(data), len(data)
        )

    def list_versions(self) -> list[str]:
        listing = self._object(f"{VERSIONS_DIR}/")
        with self._requests(self.locate(VERSIONS_DIR)):
            try:
                names = [
                    item.object_name[len(listing) :].rstrip("/")
                    for item in self.client.list_objects(self.bucket, prefix=listing)
                    if item.object_name is not None
                ]
            except S3Error as error:
                if error.code in _ABSENT:
                    return []
                raise
        return sorted(name for name in names if is_version(name))

    def delete_version(self, version: str) -> None:
        prefix = self._object(f"{VERSIONS_DIR}/{version}/")
        with self._requests(self.locate(f"{VERSIONS_DIR}/{version}")):
            objects = [
                DeleteObject(item.object_name)
                for item in self.client.list_objects(
                    self.bucket, prefix=prefix, recursive=True
                )
                if item.object_name is not None
            ]
            for failure in self.client.remove_objects(self.bucket, objects):
                raise StoreError(f"{self.uri}: cannot delete {failure.name}: {failure}")

    def pointer_tag(self) -> str | None:
        with self._requests(self.locate(POINTER_NAME)):
            try:
                return self.client.stat_object(
                    self.bucket, self._object(POINTER_NAME)
                ).etag
            except S3Error as error:
                if error.code in _ABSENT:
                    return None
                raise


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
