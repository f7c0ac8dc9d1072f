"""A model store in a local directory, such as a PVC mounted at /models.

A version is written under ``.staging/`` and renamed into ``versions/`` when it is
complete; the pointer is written to a temporary file and moved over
``latest.json`` with ``os.replace``. Both renames are atomic on a POSIX file
system, so a reader sees the old state or the new one, never a mixture.

Writers compare-and-swap the pointer under a lock file created with
``O_CREAT | O_EXCL``, which is atomic on local file systems and on NFSv3 and later
(no ``flock``, which NFS may not honour across clients). A writer holds the lock
for milliseconds; a lock older than STALE_LOCK_SECONDS was left by a writer that
died, and the next writer breaks it by renaming it away (one rename wins).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from training.store.base import ModelStore
from training.store.errors import (
    FileTooLargeError,
    IntegrityError,
    PointerConflictError,
    StoreError,
)
from training.store.layout import (
    MAX_METADATA_BYTES,
    POINTER_NAME,
    VERSIONS_DIR,
    is_version,
    sha256_hex,
)

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"
LOCK_NAME = f".{POINTER_NAME}.lock"
# Far above the milliseconds a writer holds the lock, and above NFS clock skew.
STALE_LOCK_SECONDS = 60.0
# How long a writer waits for a live lock before giving up with a StoreError.
LOCK_WAIT_SECONDS = 30.0


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
            # A full disk must not leave a partial version behind on every retry.
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(
                f"{self.uri}: cannot write version {version}: {error}"
            ) from error

    def read_pointer_with_tag(self) -> tuple[bytes | None, str | None]:
        # The content's hash, not pointer_tag(): an inode can be reused within one
        # tick of a coarse mtime, and the same content means the same champion.
        data = self.read(POINTER_NAME)
        return data, (sha256_hex(data) if data is not None else None)

    def write_pointer(self, data: bytes, expected_tag: str | None) -> None:
        temporary = self.root / f".{POINTER_NAME}.{secrets.token_hex(4)}.tmp"
        with self._pointer_lock():
            _, current_tag = self.read_pointer_with_tag()
            if current_tag != expected_tag:
                raise PointerConflictError(
                    f"{self.locate(POINTER_NAME)}: changed since it was read"
                )
            try:
                _write_durably(temporary, data)
                os.replace(temporary, self.root / POINTER_NAME)
                _fsync_dir(self.root)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise StoreError(
                    f"{self.locate(POINTER_NAME)}: cannot write: {error}"
                ) from error

    @contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        lock = self.root / LOCK_NAME
        owner = f"{socket.gethostname()} pid={os.getpid()} {secrets.token_hex(8)}"
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                self._break_if_stale(lock)
            except OSError as error:
                raise StoreError(f"{lock}: cannot create the lock: {error}") from error
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{lock}: held for over {LOCK_WAIT_SECONDS:.0f}s by "
                    f"{_read_text(lock)!r}; delete it if that writer is gone"
                )
            time.sleep(random.uniform(0.005, 0.03))  # noqa: S311 - jitter, not secrets
        try:
            os.write(descriptor, owner.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            yield
        finally:
            if _read_text(lock) == owner:
                lock.unlink(missing_ok=True)

    def _break_if_stale(self, lock: Path) -> None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age < STALE_LOCK_SECONDS:
            return
        # Renaming is atomic: of several writers breaking the same lock, one wins.
        broken = lock.with_name(f"{LOCK_NAME}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(lock, broken)
        except FileNotFoundError:
            return
        log.warning(
            "broke a stale pointer lock age_seconds=%.0f owner=%r",
            age,
            _read_text(broken),
        )
        broken.unlink(missing_ok=True)

    def write_record(self, key: str, data: bytes) -> None:
        path = self.root / key
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_durably(temporary, data)
            os.rename(temporary, path)
            _fsync_dir(path.parent)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise StoreError(f"{self.locate(key)}: cannot write: {error}") from error

    def list_records(self, directory: str) -> list[str]:
        try:
            names = os.listdir(self.root / directory)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StoreError(
                f"{self.locate(directory)}: cannot list: {error}"
            ) from error
        return sorted(name for name in names if not name.startswith("."))

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


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
