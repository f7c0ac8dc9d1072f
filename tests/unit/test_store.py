"""The artifact contract, on a real directory and a real S3 server."""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import skops.io

from tests.conftest import S3Server
from training.store import (
    IntegrityError,
    ModelStore,
    Pointer,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from training.store.bucket import BucketStore
from training.store.directory import DirectoryStore
from training.store.layout import (
    METADATA_FILE,
    MODEL_FILE,
    POINTER_NAME,
    is_version,
    new_version,
    sha256_hex,
    version_key,
)
from training.store.model_file import TRUSTED_TYPES
from training.train import TrainedModel


def overwrite(store: ModelStore, key: str, data: bytes) -> None:
    """Change a stored file behind the store's back, as an attacker or a fault would."""
    if isinstance(store, DirectoryStore):
        (store.root / key).write_bytes(data)
    else:
        assert isinstance(store, BucketStore)
        store.client.put_object(
            store.bucket, f"{store.prefix}/{key}", io.BytesIO(data), len(data)
        )


def test_open_store_picks_the_backend(tmp_path: Path, s3_env: S3Server) -> None:
    assert isinstance(open_store(str(tmp_path)), DirectoryStore)
    assert isinstance(open_store(f"file://{tmp_path}"), DirectoryStore)
    bucket = open_store("s3://models/iris/")
    assert isinstance(bucket, BucketStore)
    assert (bucket.bucket, bucket.prefix, bucket.uri) == (
        "models",
        "iris",
        "s3://models/iris",
    )
    with pytest.raises(StoreError, match="unsupported model URI"):
        open_store("gs://models/iris")
    with pytest.raises(StoreError, match="needs a bucket"):
        open_store("s3:///iris")


def test_nothing_published_reads_as_none(store: ModelStore) -> None:
    assert store.read_pointer() is None
    assert store.pointer_tag() is None
    assert store.load_current() is None
    assert store.list_versions() == []


def test_publish_then_load_round_trips(
    store: ModelStore, trained: TrainedModel
) -> None:
    metadata = store.publish(trained.estimator, trained.card, keep_versions=5)

    loaded = store.load_current()

    assert loaded is not None
    assert loaded.metadata == metadata
    assert metadata.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata.class_names == ["setosa", "versicolor", "virginica"]
    assert metadata.metrics == trained.card.metrics
    assert metadata.hyperparameters["n_estimators"] == 5
    assert len(metadata.dataset_sha256) == 64
    assert metadata.sklearn_version
    assert metadata.python_version
    assert abs(metadata.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    rows = trained.split.x_test
    assert np.array_equal(
        loaded.estimator.predict_proba(rows), trained.estimator.predict_proba(rows)
    )
    assert store.list_versions() == [metadata.version]
    stored_metadata = store.read(version_key(metadata.version, METADATA_FILE))
    assert stored_metadata is not None
    assert store.read_pointer() == Pointer(
        version=metadata.version, metadata_sha256=sha256_hex(stored_metadata)
    )


def test_the_pointer_names_the_newest_version_and_its_tag_changes(
    store: ModelStore, trained: TrainedModel
) -> None:
    first = store.publish(trained.estimator, trained.card, keep_versions=5)
    first_tag = store.pointer_tag()
    second = store.publish(trained.estimator, trained.card, keep_versions=5)

    assert first_tag is not None
    assert store.pointer_tag() not in {None, first_tag}
    pointer = store.read_pointer()
    assert pointer is not None
    assert pointer.version == second.version
    assert store.list_versions() == [first.version, second.version]


def test_old_versions_are_pruned_to_the_newest_n(
    store: ModelStore, trained: TrainedModel
) -> None:
    published = [
        store.publish(trained.estimator, trained.card, keep_versions=3).version
        for _ in range(5)
    ]

    assert store.list_versions() == published[-3:]
    for gone in published[:2]:
        assert store.read(version_key(gone, MODEL_FILE)) is None


def test_versions_sort_by_time_and_are_never_prefixes_of_each_other() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    versions = [new_version(start + timedelta(microseconds=step)) for step in range(50)]
    versions += [new_version(start) for _ in range(50)]

    assert all(is_version(version) for version in versions)
    assert sorted(versions[:50]) == versions[:50]
    assert len({len(version) for version in versions}) == 1
    for a in versions:
        for b in versions:
            assert a == b or not b.startswith(a)


def test_a_tampered_model_file_is_refused(
    store: ModelStore, trained: TrainedModel
) -> None:
    metadata = store.publish(trained.estimator, trained.card, keep_versions=5)
    key = version_key(metadata.version, MODEL_FILE)
    original = store.read(key)
    assert original is not None
    tampered = original[:-1] + bytes([original[-1] ^ 1])
    overwrite(store, key, tampered)

    with pytest.raises(IntegrityError, match=rf"{key}: sha256 \w+ does not match"):
        store.load_current()


def test_tampered_metadata_is_refused(store: ModelStore, trained: TrainedModel) -> None:
    metadata = store.publish(trained.estimator, trained.card, keep_versions=5)
    key = version_key(metadata.version, METADATA_FILE)
    document = json.loads(store.read(key) or b"")
    document["metrics"]["accuracy"] = 1.0
    overwrite(store, key, json.dumps(document).encode())

    with pytest.raises(IntegrityError, match=rf"{key}: sha256 \w+ does not match"):
        store.load_current()


def test_a_missing_model_file_is_reported_by_name(
    store: ModelStore, trained: TrainedModel
) -> None:
    metadata = store.publish(trained.estimator, trained.card, keep_versions=5)
    store.delete_version(metadata.version)

    with pytest.raises(
        IntegrityError, match=rf"{metadata.version}/metadata.json: missing"
    ):
        store.load_current()


def test_a_garbled_pointer_is_refused(store: ModelStore, trained: TrainedModel) -> None:
    store.publish(trained.estimator, trained.card, keep_versions=5)
    store.write_pointer(b'{"version": "../../etc"}', store.read_pointer_state().tag)

    with pytest.raises(IntegrityError, match=f"{POINTER_NAME}: not a valid pointer"):
        store.load_current()


def test_a_model_that_would_run_code_is_never_executed(
    store: ModelStore, trained: TrainedModel, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    # os.system is an untrusted type to skops: loading must refuse it, not call it.
    hostile = skops.io.dumps({"estimator": os.system, "argument": f"touch {marker}"})
    store.publish_file(hostile, trained.card, keep_versions=5)

    with pytest.raises(IntegrityError, match=r"model.skops: refused to load: .*system"):
        store.load_current()
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"", b"\x00" * 64, os.urandom(4096)], ids=["empty", "zeros", "random"]
)
def test_bytes_that_are_not_a_model_are_refused(
    store: ModelStore, trained: TrainedModel, content: bytes
) -> None:
    store.publish_file(content, trained.card, keep_versions=5)

    with pytest.raises(
        IntegrityError, match=r"model\.skops: not a readable skops file"
    ):
        store.load_current()


def test_a_truncated_model_file_is_refused(
    store: ModelStore, trained: TrainedModel
) -> None:
    whole = skops.io.dumps(trained.estimator, compression=zipfile.ZIP_DEFLATED)
    store.publish_file(whole[: len(whole) // 2], trained.card, keep_versions=5)

    with pytest.raises(
        IntegrityError, match=r"model\.skops: not a readable skops file"
    ):
        store.load_current()


def test_the_trusted_type_list_covers_every_model_training_makes(
    trained: TrainedModel,
) -> None:
    from training.estimator import build_estimator
    from training.settings import TrainingSettings

    for algorithm in ("random_forest", "decision_tree"):
        estimator = build_estimator(
            TrainingSettings(algorithm=algorithm, n_estimators=2)
        )
        estimator.fit(trained.split.x_train, trained.split.y_train)
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(estimator))
        assert set(untrusted) <= set(TRUSTED_TYPES)


def test_a_wrong_secret_is_a_clear_store_error(
    s3_server: S3Server, bucket_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRIS_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("IRIS_S3_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("IRIS_S3_SECRET_ACCESS_KEY", "not-the-secret")

    with pytest.raises(
        StoreUnavailableError, match="refused the request: SignatureDoesNotMatch"
    ):
        open_store(bucket_uri).read_pointer()


def test_an_unreachable_endpoint_is_a_clear_store_error(
    bucket_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("IRIS_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("IRIS_S3_TIMEOUT_SECONDS", "1")
    # Static keys, so the credential chain is not what fails first.
    monkeypatch.setenv("IRIS_S3_ACCESS_KEY_ID", "iris")
    monkeypatch.setenv("IRIS_S3_SECRET_ACCESS_KEY", "unreachable-anyway")

    with pytest.raises(
        StoreUnavailableError, match=r"cannot reach http://127\.0\.0\.1"
    ):
        open_store(bucket_uri).read_pointer()


def test_an_endpoint_without_a_scheme_is_refused(
    bucket_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRIS_S3_ENDPOINT", "minio:9000")

    with pytest.raises(StoreError, match="must be an http:// or https:// URL"):
        open_store(bucket_uri)
