"""The model file format: skops, loaded with an explicit list of trusted types.

skops never unpickles: it rebuilds only the types it is told to trust, so a
hostile model file cannot run code when it is loaded. scikit-learn's estimators
are trusted by skops itself; the only other type a tree or forest needs is the
Cython ``Tree``.

skops (and with it scikit-learn) is imported only when a model file is read or
written: a predictor serving the compiled grid never pays for either.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from training.store.errors import IntegrityError
from training.store.layout import MAX_MODEL_MEMBERS, MAX_MODEL_UNPACKED_BYTES

TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
# Every member has one entry in the zip's central directory, starting with this.
CENTRAL_DIRECTORY_ENTRY = b"PK\x01\x02"
UNPACK_CHUNK_BYTES = 1024 * 1024


def dump_model(estimator: Any) -> bytes:
    import skops.io

    data: bytes = skops.io.dumps(estimator, compression=zipfile.ZIP_DEFLATED)
    return data


def load_model(data: bytes, source: str) -> Any:
    """Rebuild an estimator from skops bytes, or raise IntegrityError naming source."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        check_unpacked_size(data, source)
        return skops.io.loads(data, trusted=TRUSTED_TYPES)
    except IntegrityError:
        raise
    except UntrustedTypesFoundException as error:
        raise IntegrityError(f"{source}: refused to load: {error}") from error
    # Any exception from a deserialiser fed untrusted bytes means "not a model".
    except Exception as error:
        raise IntegrityError(
            f"{source}: not a readable skops file: {type(error).__name__}: {error}"
        ) from error


def check_unpacked_size(data: bytes, source: str) -> None:
    """Refuse a zip with too many members, or members that unpack to too much.

    The counts a zip declares can lie, so the members are counted by their entries'
    signature, and unpacked once, a chunk at a time, counting the bytes read, before
    skops unpacks them for real.
    """
    entries = data.count(CENTRAL_DIRECTORY_ENTRY)
    if entries > MAX_MODEL_MEMBERS:
        raise IntegrityError(
            f"{source}: refused to load: more than the limit of {MAX_MODEL_MEMBERS} "
            f"zip members ({entries} entries)"
        )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        declared = sum(member.file_size for member in members)
        if declared > MAX_MODEL_UNPACKED_BYTES:
            raise IntegrityError(
                f"{source}: refused to load: its zip members unpack to {declared} "
                f"bytes, more than the limit of {MAX_MODEL_UNPACKED_BYTES}"
            )
        unpacked = 0
        for member in members:
            with archive.open(member) as reader:
                while chunk := reader.read(UNPACK_CHUNK_BYTES):
                    unpacked += len(chunk)
                    if unpacked > MAX_MODEL_UNPACKED_BYTES:
                        raise IntegrityError(
                            f"{source}: refused to load: its zip members unpack to "
                            f"more than the limit of {MAX_MODEL_UNPACKED_BYTES} bytes"
                        )
