"""The model file format: skops, loaded with an explicit list of trusted types.

skops never unpickles: it rebuilds only the types it is told to trust, so a
hostile model file cannot run code when it is loaded. scikit-learn's estimators
are trusted by skops itself; the only other type a tree or forest needs is the
Cython ``Tree``.

skops (and with it scikit-learn) is imported only when a model file is read or
written: a predictor serving the compiled grid never pays for either.
"""

from __future__ import annotations

import zipfile
from typing import Any

from training.store.errors import IntegrityError

TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def dump_model(estimator: Any) -> bytes:
    import skops.io

    data: bytes = skops.io.dumps(estimator, compression=zipfile.ZIP_DEFLATED)
    return data


def load_model(data: bytes, source: str) -> Any:
    """Rebuild an estimator from skops bytes, or raise IntegrityError naming source."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.loads(data, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as error:
        raise IntegrityError(f"{source}: refused to load: {error}") from error
    # Any exception from a deserialiser fed untrusted bytes means "not a model".
    except Exception as error:
        raise IntegrityError(
            f"{source}: not a readable skops file: {type(error).__name__}: {error}"
        ) from error
