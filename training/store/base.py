"""Publishing and loading model versions, the same way on every backend.

A backend (a directory, a bucket) supplies a handful of storage primitives; this
class owns the protocol on top of them: a version is written completely, then the
pointer is switched to it, and a reader verifies every file it reads.
"""

from __future__ import annotations

import logging
import platform
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as installed_version
from typing import Any

from pydantic import ValidationError

from training.store.errors import IntegrityError, StoreError
from training.store.grid import GridUnavailable, ThresholdGrid
from training.store.layout import (
    GRID_FILE,
    MAX_METADATA_BYTES,
    MAX_MODEL_BYTES,
    MAX_POINTER_BYTES,
    METADATA_FILE,
    MODEL_FILE,
    POINTER_NAME,
    ModelCard,
    ModelMetadata,
    Pointer,
    ServingArtifact,
    new_version,
    sha256_hex,
    version_key,
)
from training.store.model_file import dump_model, load_model

log = logging.getLogger(__name__)

# A reader that loses a race with pruning re-reads the pointer this many times.
_LOAD_ATTEMPTS = 3


class MissingFileError(IntegrityError):
    """A file the pointer or the metadata names is not in the store."""


@dataclass(frozen=True)
class PublishedModel:
    """A verified, loaded model version: its estimator, or its compiled grid."""

    metadata: ModelMetadata
    # None when the serving grid was loaded instead (``load(prefer_grid=True)``).
    estimator: Any
    grid: ThresholdGrid | None = None


class ModelStore(ABC):
    """A place where model versions are published and from which they are loaded."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    def locate(self, key: str) -> str:
        """The full address of a key, for messages."""
        return f"{self.uri}/{key}"

    @abstractmethod
    def read(self, key: str, max_bytes: int = MAX_METADATA_BYTES) -> bytes | None:
        """The bytes stored at key, or None when there is no such file.

        A file larger than max_bytes raises FileTooLargeError without being read
        whole.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a file is stored at key."""

    @abstractmethod
    def write_version(self, version: str, files: Mapping[str, bytes]) -> None:
        """Store a version's files completely and durably, without making it current."""

    @abstractmethod
    def write_pointer(self, data: bytes) -> None:
        """Replace the pointer in one atomic step."""

    @abstractmethod
    def list_versions(self) -> list[str]:
        """Every stored version, oldest first."""

    @abstractmethod
    def delete_version(self, version: str) -> None:
        """Remove one version's files."""

    @abstractmethod
    def pointer_tag(self) -> str | None:
        """A cheap token that changes whenever the pointer is rewritten, or None."""

    def read_pointer(self) -> Pointer | None:
        """The current pointer, or None when nothing has been published yet."""
        data = self.read(POINTER_NAME, MAX_POINTER_BYTES)
        if data is None:
            return None
        try:
            return Pointer.model_validate_json(data)
        except ValidationError as error:
            raise IntegrityError(
                f"{self.locate(POINTER_NAME)}: not a valid pointer: "
                f"{_first_error(error)}"
            ) from error

    def publish(
        self, estimator: Any, card: ModelCard, keep_versions: int
    ) -> ModelMetadata:
        """Publish a new version and make it current; keep the newest keep_versions.

        The estimator is published as a model file and, when its grid is small
        enough, compiled into the serving grid beside it.
        """
        try:
            grid: bytes | None = ThresholdGrid.compile(estimator).to_bytes()
        except GridUnavailable as error:
            log.warning("no serving grid, scikit-learn will serve reason=%s", error)
            grid = None
        return self.publish_file(dump_model(estimator), card, keep_versions, grid)

    def publish_file(
        self,
        model_bytes: bytes,
        card: ModelCard,
        keep_versions: int,
        grid_bytes: bytes | None = None,
    ) -> ModelMetadata:
        """Publish serialised model bytes; readers still verify what they load."""
        version = new_version()
        metadata = ModelMetadata(
            **card.model_dump(),
            version=version,
            created_at=datetime.now(UTC),
            sklearn_version=installed_version("scikit-learn"),
            python_version=platform.python_version(),
            model_sha256=sha256_hex(model_bytes),
            serving_artifact=(
                ServingArtifact(sha256=sha256_hex(grid_bytes)) if grid_bytes else None
            ),
        )
        metadata_bytes = metadata.model_dump_json(indent=2).encode()
        files = {MODEL_FILE: model_bytes, METADATA_FILE: metadata_bytes}
        if grid_bytes:
            files[GRID_FILE] = grid_bytes
        self.write_version(version, files)
        pointer = Pointer(version=version, metadata_sha256=sha256_hex(metadata_bytes))
        self.write_pointer(pointer.model_dump_json().encode())
        log.info("published version=%s uri=%s", version, self.uri)
        self.prune(keep_versions, current=version)
        return metadata

    def prune(self, keep_versions: int, current: str) -> None:
        """Delete all but the newest keep_versions versions; never the current one."""
        if keep_versions < 1:
            raise ValueError("keep_versions must be at least 1")
        for version in self.list_versions()[:-keep_versions]:
            if version != current:
                self.delete_version(version)
                log.info("pruned version=%s uri=%s", version, self.uri)

    def load(self, pointer: Pointer, prefer_grid: bool = False) -> PublishedModel:
        """Load the version a pointer names, verifying each file on the way.

        With prefer_grid, a version that has a serving grid is loaded from it alone,
        with NumPy: neither scikit-learn nor skops is imported.
        """
        metadata_key = version_key(pointer.version, METADATA_FILE)
        metadata_bytes = self._read_verified(
            metadata_key, pointer.metadata_sha256, MAX_METADATA_BYTES
        )
        try:
            metadata = ModelMetadata.model_validate_json(metadata_bytes)
        except ValidationError as error:
            raise IntegrityError(
                f"{self.locate(metadata_key)}: not valid metadata: "
                f"{_first_error(error)}"
            ) from error
        if metadata.version != pointer.version:
            raise IntegrityError(
                f"{self.locate(metadata_key)}: describes version {metadata.version}, "
                f"not {pointer.version}"
            )
        artifact = metadata.serving_artifact
        if prefer_grid and artifact is not None:
            grid_key = version_key(pointer.version, artifact.file)
            grid_bytes = self._read_verified(grid_key, artifact.sha256, MAX_MODEL_BYTES)
            try:
                grid = ThresholdGrid.from_bytes(grid_bytes)
            except ValueError as error:
                raise IntegrityError(f"{self.locate(grid_key)}: {error}") from error
            return PublishedModel(metadata=metadata, estimator=None, grid=grid)
        model_key = version_key(pointer.version, metadata.model_file)
        model_bytes = self._read_verified(
            model_key, metadata.model_sha256, MAX_MODEL_BYTES
        )
        estimator = load_model(model_bytes, source=self.locate(model_key))
        return PublishedModel(metadata=metadata, estimator=estimator)

    def load_current(self, prefer_grid: bool = False) -> PublishedModel | None:
        """Load the current version, or return None when nothing is published.

        A version can be pruned between reading the pointer and reading its files;
        then the pointer has moved on, and the newer version is loaded instead.
        """
        for _ in range(_LOAD_ATTEMPTS):
            pointer = self.read_pointer()
            if pointer is None:
                return None
            try:
                return self.load(pointer, prefer_grid)
            except MissingFileError:
                if self.read_pointer() == pointer:
                    raise
        raise StoreError(f"{self.uri}: the pointer kept moving while loading")

    def _read_verified(self, key: str, expected_sha256: str, max_bytes: int) -> bytes:
        data = self.read(key, max_bytes)
        if data is None:
            raise MissingFileError(f"{self.locate(key)}: missing")
        actual = sha256_hex(data)
        if actual != expected_sha256:
            raise IntegrityError(
                f"{self.locate(key)}: sha256 {actual} does not match the expected "
                f"{expected_sha256} ({len(data)} bytes)"
            )
        return data


def _first_error(error: ValidationError) -> str:
    """The first problem in one short line: names in it come from the file."""
    first = error.errors()[0]
    where = ".".join(_printable(str(part)) for part in first["loc"]) or "document"
    return f"{where}: {first['msg']}"


def _printable(text: str, limit: int = 60) -> str:
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else f"{shown[:limit]}..."
