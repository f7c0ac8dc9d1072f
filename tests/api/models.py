"""Published models that must never be served, each broken in its own way."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import skops.io
from sklearn.ensemble import RandomForestClassifier

from training.store import ModelStore
from training.store.directory import DirectoryStore
from training.store.grid import ThresholdGrid
from training.store.layout import (
    GRID_FILE,
    MODEL_FILE,
    POINTER_NAME,
    VERSIONS_DIR,
    version_key,
)
from training.train import TrainedModel


class WritesMarker:
    """Unpickling this creates a file: proof that code in a model file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def forest(x: np.ndarray, y: np.ndarray) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)


def publish_tampered(
    store: ModelStore,
    trained: TrainedModel,
    file: str,
    tamper: Callable[[Path], object],
) -> str:
    """Publish a version whose file was damaged before the pointer named it.

    The version is published to a scratch store, damaged there, and then moved into
    the real one the way a publish does it, so no reader can see it undamaged. A
    damaged model file is published without a grid, so the predictor must read it.
    """
    assert isinstance(store, DirectoryStore)
    scratch = DirectoryStore(store.root.parent / f"scratch-{os.urandom(4).hex()}")
    if file == MODEL_FILE:
        model = skops.io.dumps(trained.estimator, compression=zipfile.ZIP_DEFLATED)
        version = scratch.publish_file(model, trained.card, 5).version
    else:
        version = scratch.publish(trained.estimator, trained.card, 5).version
    tamper(scratch.root / version_key(version, file))
    (store.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    os.rename(
        scratch.root / VERSIONS_DIR / version, store.root / VERSIONS_DIR / version
    )
    os.replace(scratch.root / POINTER_NAME, store.root / POINTER_NAME)
    return version


def zip_bomb(unpacked_mib: int) -> bytes:
    """A one-member zip whose member unpacks to ``unpacked_mib`` MiB of zeros.

    Written by hand from one compressed MiB repeated, since deflating a GiB takes
    tens of seconds: after a full flush, the compressor starts afresh.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1024 * 1024)
    one_mib = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = one_mib * unpacked_mib + compressor.flush()
    crc = 0
    for _ in range(unpacked_mib):
        crc = zlib.crc32(zeros, crc)
    name = b"schema.json"
    sizes = struct.pack("<III", crc, len(stream), unpacked_mib * len(zeros))
    local = b"PK\x03\x04" + struct.pack("<HHHHH", 20, 0, 8, 0, 0) + sizes
    local += struct.pack("<HH", len(name), 0) + name
    central = b"PK\x01\x02" + struct.pack("<HHHHHH", 20, 20, 0, 8, 0, 0) + sizes
    central += struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0) + name
    end = b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(stream), 0
    )
    return local + stream + central + end


def many_members(count: int) -> bytes:
    """A zip of ``count`` empty members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            archive.writestr(f"{index}.npy", b"")
    return buffer.getvalue()


def publish_broken(
    kind: str, store: ModelStore, trained: TrainedModel, marker: Path
) -> str:
    """Publish one broken model; return what the predictor's log must say about it."""
    x, y = trained.split.x_train, trained.split.y_train
    whole = skops.io.dumps(trained.estimator, compression=zipfile.ZIP_DEFLATED)
    card = trained.card
    if kind == "missing":
        version = publish_tampered(store, trained, MODEL_FILE, Path.unlink)
        return f"{version}/model.skops: missing"
    if kind == "truncated":
        version = publish_tampered(
            store,
            trained,
            MODEL_FILE,
            lambda path: path.write_bytes(whole[: len(whole) // 2]),
        )
        return f"{version}/model.skops: sha256 "
    if kind == "grid missing":
        version = publish_tampered(store, trained, GRID_FILE, Path.unlink)
        return f"{version}/grid.npz: missing"
    if kind == "grid truncated":
        version = publish_tampered(
            store,
            trained,
            GRID_FILE,
            lambda path: path.write_bytes(path.read_bytes()[:1000]),
        )
        return f"{version}/grid.npz: sha256 "
    if kind == "grid not a grid":
        version = store.publish_file(whole, card, 5, b"not a grid").version
        return f"{version}/grid.npz: not a threshold grid"
    if kind == "empty":
        version = store.publish_file(b"", card, 5).version
        return f"{version}/model.skops: not a readable skops file"
    if kind == "random bytes":
        version = store.publish_file(os.urandom(4096), card, 5).version
        return f"{version}/model.skops: not a readable skops file"
    if kind == "pickle":
        version = store.publish_file(
            pickle.dumps(WritesMarker(marker)), card, 5
        ).version
        return f"{version}/model.skops: not a readable skops file"
    if kind == "zip bomb":
        version = store.publish_file(zip_bomb(1024), card, 5).version
        return (
            f"{version}/model.skops: refused to load: its zip members unpack to "
            "1073741824 bytes, more than the limit of 268435456"
        )
    if kind == "too many zip members":
        version = store.publish_file(many_members(10_001), card, 5).version
        return (
            f"{version}/model.skops: refused to load: more than the limit of 10000 "
            "zip members (10001 entries)"
        )
    if kind == "untrusted type":
        hostile = skops.io.dumps({"call": os.system, "argument": f"touch {marker}"})
        version = store.publish_file(hostile, card, 5).version
        return f"{version}/model.skops: refused to load: Untrusted types found"
    if kind == "wrong object":
        version = store.publish({"weights": [1, 2, 3]}, card, 5).version
        return f"{version}/model.skops: rejected: holds a dict, expected a RandomForest"
    if kind == "three features":
        version = store.publish(forest(x[:, :3], y), card, 5).version
        return f"{version}/grid.npz: rejected: its grid expects 3 features, expected 4"
    if kind == "three features, no grid":
        model = skops.io.dumps(forest(x[:, :3], y))
        version = store.publish_file(model, card, 5).version
        return f"{version}/model.skops: rejected: expects 3 features, expected 4"
    if kind == "two classes":
        keep = y < 2
        version = store.publish(forest(x[keep], y[keep]), card, 5).version
        return f"{version}/grid.npz: rejected: its grid predicts 2 classes, expected 3"
    if kind == "wrong answers":
        version = store.publish(forest(x, (y + 1) % 3), card, 5).version
        return f"{version}/grid.npz: rejected: does not reproduce golden row 0: "
    if kind == "wrong answers, no grid":
        model = skops.io.dumps(forest(x, (y + 1) % 3))
        version = store.publish_file(model, card, 5).version
        return f"{version}/model.skops: rejected: does not reproduce golden row 0: "
    if kind == "grid of another model":
        other = ThresholdGrid.compile(forest(x, (y + 1) % 3)).to_bytes()
        version = store.publish_file(whole, card, 5, other).version
        return f"{version}/grid.npz: rejected: does not reproduce golden row 0: "
    raise ValueError(kind)


BROKEN = [
    "missing",
    "truncated",
    "empty",
    "random bytes",
    "pickle",
    "untrusted type",
    "zip bomb",
    "too many zip members",
    "wrong object",
    "three features",
    "three features, no grid",
    "two classes",
    "wrong answers",
    "wrong answers, no grid",
    "grid missing",
    "grid truncated",
    "grid not a grid",
    "grid of another model",
]
