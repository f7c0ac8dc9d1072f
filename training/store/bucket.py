"""A model store under a prefix of an S3 bucket, such as MinIO.

S3 writes each object atomically but has no rename, so a version's objects are
all written before the pointer object, which is written last: a reader that
follows the pointer finds every file of the version it names. The pointer is
written conditionally (``If-Match`` on the ETag read, ``If-None-Match: *`` when
there was none), so of two writers that read the same pointer only one wins.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    IamAwsProvider,
    Provider,
    StaticProvider,
)
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.store.base import ModelStore
from training.store.errors import (
    FileTooLargeError,
    PointerConflictError,
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
# 412 when the condition fails; AWS answers 409 to a write racing another one.
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
# botocore's default for the instance metadata service: off a cloud VM nothing
# answers at 169.254.169.254, so a pod without credentials fails fast, not hangs.
_METADATA_CONNECT_SECONDS = 1.0


class S3Settings(BaseSettings):
    """How to reach the S3 endpoint. Without both keys, the AWS credential chain."""

    model_config = SettingsConfigDict(env_prefix="IRIS_S3_")

    endpoint: str = Field(
        "http://127.0.0.1:9000",
        description="URL of the S3 endpoint; https:// turns TLS on.",
    )
    access_key_id: SecretStr | None = Field(
        None, description="Access key id; unset uses the AWS credential chain."
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Secret key; unset uses the AWS credential chain."
    )
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
            credentials=_credentials(settings),
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

    def read_pointer_with_tag(self) -> tuple[bytes | None, str | None]:
        # One GET returns the bytes and the ETag that describes exactly them.
        with self._requests(self.locate(POINTER_NAME)):
            try:
                response = self.client.get_object(
                    self.bucket, self._object(POINTER_NAME)
                )
            except S3Error as error:
                if error.code in _ABSENT:
                    return None, None
                raise
            try:
                return response.read(), response.headers["ETag"].strip('"')
            finally:
                response.close()
                response.release_conn()

    def write_version(self, version: str, files: Mapping[str, bytes]) -> None:
        with self._requests(self.uri):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                    log.info(
                        "created bucket=%s endpoint=%s", self.bucket, self.endpoint
                    )
                except S3Error as error:
                    # Another trainer created it in between: that is what we wanted.
                    if error.code != "BucketAlreadyOwnedByYou":
                        raise
            for name, data in files.items():
                self._put(f"{VERSIONS_DIR}/{version}/{name}", data)

    def write_pointer(self, data: bytes, expected_tag: str | None) -> None:
        condition: dict[str, str | list[str] | tuple[str]] = (
            {"If-None-Match": "*"}
            if expected_tag is None
            else {"If-Match": f'"{expected_tag}"'}
        )
        with self._requests(self.locate(POINTER_NAME)):
            try:
                # put_object would send these as x-amz-meta-* user metadata
                # (minio 7.2 helpers.normalize_headers); _put_object sends them as is.
                self.client._put_object(
                    self.bucket, self._object(POINTER_NAME), data, condition
                )
            except S3Error as error:
                if error.code in _CONFLICT:
                    raise PointerConflictError(
                        f"{self.locate(POINTER_NAME)}: changed since it was read"
                    ) from error
                raise

    def write_record(self, key: str, data: bytes) -> None:
        with self._requests(self.locate(key)):
            self._put(key, data)

    def list_records(self, directory: str) -> list[str]:
        listing = self._object(f"{directory}/")
        with self._requests(self.locate(directory)):
            try:
                names = [
                    item.object_name[len(listing) :]
                    for item in self.client.list_objects(self.bucket, prefix=listing)
                    if item.object_name is not None and not item.is_dir
                ]
            except S3Error as error:
                if error.code in _ABSENT:
                    return []
                raise
        return sorted(names)

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


class _AwsChain(ChainedProvider):
    """The AWS credential chain, failing with a StoreError that says what to set."""

    def retrieve(self) -> Credentials:
        try:
            return super().retrieve()
        except (ValueError, OSError, urllib3.exceptions.HTTPError) as error:
            raise StoreUnavailableError(
                "no S3 credentials: set IRIS_S3_ACCESS_KEY_ID and "
                "IRIS_S3_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, an AWS credentials file, web identity "
                "(AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), or run where the "
                f"container or instance metadata service answers: {error}"
            ) from error


def _credentials(settings: S3Settings) -> Provider:
    """Both static keys, or else the AWS chain: the environment, the shared
    credentials file, then web identity, the ECS endpoint or the instance's IMDS."""
    access_key_id, secret_access_key = (
        settings.access_key_id,
        settings.secret_access_key,
    )
    if access_key_id is not None and secret_access_key is not None:
        return StaticProvider(
            access_key_id.get_secret_value(), secret_access_key.get_secret_value()
        )
    if access_key_id is not None or secret_access_key is not None:
        raise StoreError(
            "IRIS_S3_ACCESS_KEY_ID and IRIS_S3_SECRET_ACCESS_KEY go together: "
            "set both, or neither to use the AWS credential chain"
        )
    metadata_client = urllib3.PoolManager(
        timeout=urllib3.Timeout(
            connect=_METADATA_CONNECT_SECONDS, read=settings.timeout_seconds
        ),
        retries=urllib3.Retry(total=1, backoff_factor=0.2),
    )
    return _AwsChain(
        [
            EnvAWSProvider(),
            AWSConfigProvider(),
            IamAwsProvider(http_client=metadata_client),
        ]
    )
