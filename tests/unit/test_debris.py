"""Failed publishes leave no debris, and the exit code says what happened."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from training.gate import ExitCode
from training.lifecycle import publish_if_better
from training.settings import TrainingSettings
from training.store import ModelStore, StoreError, open_store
from training.store.base import ORPHAN_GRACE
from training.store.directory import STAGING_DIR, DirectoryStore
from training.store.layout import METADATA_FILE, MODEL_FILE, new_version
from training.train import TrainedModel

# Far below a model file, far above what the interpreter writes before training.
FILE_SIZE_LIMIT = 4096


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    # Ignored, the signal turns an oversized write into an EFBIG error, as ENOSPC is.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_disk_leaves_no_partial_version_on_any_retry(tmp_path: Path) -> None:
    models = tmp_path / "models"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    for _ in range(2):
        result = subprocess.run(
            # A process: the file size limit is the process's. Five trees still
            # write far more than the limit.
            [
                sys.executable,
                "-m",
                "training",
                "--model_uri",
                str(models),
                "--n_estimators",
                "5",
                "--cv_folds",
                "2",
            ],
            env={**environment, "PYTHONDONTWRITEBYTECODE": "1"},
            preexec_fn=_limit_file_size,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == ExitCode.STORE_ERROR, result.stderr
        assert "File too large" in result.stderr

    assert list((models / STAGING_DIR).iterdir()) == []
    assert not (models / "versions").exists() or not any(
        (models / "versions").iterdir()
    )
    assert open_store(str(models)).read_pointer() is None


class PointerRefusingStore(DirectoryStore):
    """A directory whose pointer cannot be replaced, as on a volume gone read-only."""

    def write_pointer(self, data: bytes, expected_tag: str | None) -> None:
        raise StoreError(f"{self.uri}: cannot write the pointer: read-only file system")


class ListingFailingStore(DirectoryStore):
    """A directory whose listing fails, as a flaky NFS server's may after a write."""

    def list_versions(self) -> list[str]:
        raise StoreError(f"{self.uri}: cannot list versions: stale file handle")


def test_a_failed_pointer_replace_leaves_no_orphan_version(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = PointerRefusingStore(tmp_path / "models")
    settings = TrainingSettings(model_uri=str(tmp_path / "models"))

    try:
        publish_if_better(store, trained, settings, by="test")
    except StoreError:
        pass
    else:
        raise AssertionError("the publish should have failed")

    assert DirectoryStore(tmp_path / "models").list_versions() == []


def test_a_failed_listing_after_a_publish_still_reports_published(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = ListingFailingStore(tmp_path / "models")
    settings = TrainingSettings(model_uri=str(tmp_path / "models"))

    outcome = publish_if_better(store, trained, settings, by="test")

    assert outcome.verdict.exit_code is ExitCode.PUBLISHED
    assert outcome.published is not None
    assert outcome.cleanup_error is not None
    assert "stale file handle" in outcome.cleanup_error
    assert store.read_pointer() is not None


def _orphan(store: ModelStore, age: timedelta, complete: bool) -> str:
    version = new_version(datetime.now(UTC) - age)
    files = {MODEL_FILE: b"half"}
    if complete:
        files[METADATA_FILE] = b"{}"
    store.write_version(version, files)
    return version


def test_orphans_never_count_toward_keep_versions_and_old_ones_are_removed(
    store: ModelStore, trained: TrainedModel
) -> None:
    published = [
        store.publish(trained.estimator, trained.card, keep_versions=2).version
        for _ in range(2)
    ]
    # Left by connections cut mid-publish, before and between the real ones.
    old_orphans = [
        _orphan(store, ORPHAN_GRACE * 2, complete=False),
        _orphan(store, ORPHAN_GRACE + timedelta(minutes=1), complete=True),
    ]
    # Another trainer's version, written but not yet made current.
    in_progress = _orphan(store, timedelta(seconds=1), complete=True)

    published.append(
        store.publish(trained.estimator, trained.card, keep_versions=2).version
    )

    assert store.list_versions() == sorted([*published[-2:], in_progress])
    assert set(old_orphans).isdisjoint(store.list_versions())
