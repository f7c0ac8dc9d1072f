"""A model store in a local directory, such as a PVC mounted at /models.

A version is written under ``.staging/`` and renamed into ``versions/`` when it is
complete; the pointer is written to a temporary file and moved over
``latest.json`` with ``os.replace``. Both renames are atomic on a POSIX file
system, so a reader sees the old state or the new one, never a mixture.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from training.store.base import ModelStore
from training.store.errors import FileTooLargeError, IntegrityError, StoreError
from training.store.layout import (
    MAX_METADATA_BYTES,
    POINTER_NAME,
    VERSIONS_DIR,
    is_version,
)

STAGING_DIR = ".staging"


class DirectoryStore(ModelStore):
    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root

    def read(self, key: str, max_bytes: int = MAX_METADATA_BYTES) -> bytes | None:
        try:
            # O_NONBLOCK: a FIFO planted in the store must not block the reader.
            descriptor = os.open(self.root / key, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(f"{self.locate(key)}: cannot read: {error}") from error
        with open(descriptor, "rb") as file:
            try:
                status = os.fstat(descriptor)
                if not stat.S_ISREG(status.st_mode):
                    raise IntegrityError(f"{self.locate(key)}: not a regular file")
                if status.st_size > max_bytes:
                    raise FileTooLargeError(self.locate(key), max_bytes)
                data = file.read(max_bytes + 1)
            except OSError as error:
                raise StoreError(f"{self.locate(key)}: cannot read: {error}") from error
        if len(data) > max_bytes:
            raise FileTooLargeError(self.locate(key), max_bytes)
        return data

    def exists(self, key: str) -> bool:
        try:
            os.stat(self.root / key)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise StoreError(f"{self.locate(key)}: cannot read: {error}") from error
        return True

    def write_version(self, version: str, files: Mapping[str, bytes]) -> None:
        staging = self.root / STAGING_DIR / version
        versions = self.root / VERSIONS_DIR
        try:
            staging.mkdir(parents=True)
            for name, data in files.items():
                _write_durably(staging / name, data)
            _fsync_dir(staging)
            versions.mkdir(exist_ok=True)
            os.rename(staging, versions / version)
            _fsync_dir(versions)
        except OSError as error:
            raise StoreError(
                f"{self.uri}: cannot write version {version}: {error}"
            ) from error

    def write_pointer(self, data: bytes) -> None:
        temporary = self.root / f".{POINTER_NAME}.{secrets.token_hex(4)}.tmp"
        try:
            _write_durably(temporary, data)
            os.replace(temporary, self.root / POINTER_NAME)
            _fsync_dir(self.root)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise StoreError(
                f"{self.locate(POINTER_NAME)}: cannot write: {error}"
            ) from error

    def list_versions(self) -> list[str]:
        try:
            names = os.listdir(self.root / VERSIONS_DIR)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if is_version(name))

    def delete_version(self, version: str) -> None:
        shutil.rmtree(self.root / VERSIONS_DIR / version, ignore_errors=True)

    def pointer_tag(self) -> str | None:
        try:
            status = os.stat(self.root / POINTER_NAME)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(
                f"{self.locate(POINTER_NAME)}: cannot read: {error}"
            ) from error
        # os.replace gives the pointer a new inode, so the tag changes on every publish.
        return f"{status.st_ino}:{status.st_mtime_ns}:{status.st_size}"


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
