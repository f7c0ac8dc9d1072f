"""The artifact contract between training and the predictor.

Training publishes model versions here and the predictor loads them from here;
neither side knows the layout (see ``layout``) any other way.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from training.store.base import ModelStore, PublishedModel
from training.store.bucket import BucketStore, S3Settings
from training.store.directory import DirectoryStore
from training.store.errors import IntegrityError, StoreError, StoreUnavailableError
from training.store.layout import ModelCard, ModelMetadata, Pointer

__all__ = [
    "IntegrityError",
    "ModelCard",
    "ModelMetadata",
    "ModelStore",
    "Pointer",
    "PublishedModel",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
]


def open_store(uri: str) -> ModelStore:
    """A store for a directory path or an ``s3://bucket/prefix`` URI.

    S3 connection settings come from the ``IRIS_S3_*`` environment variables.
    """
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StoreError(
                f"{uri}: an s3:// URI needs a bucket, as in s3://models/iris"
            )
        return BucketStore(parts.netloc, parts.path, S3Settings())
    if parts.scheme in {"", "file"}:
        return DirectoryStore(Path(parts.path if parts.scheme else uri))
    raise StoreError(
        f"{uri}: unsupported model URI; use a directory or s3://bucket/prefix"
    )
