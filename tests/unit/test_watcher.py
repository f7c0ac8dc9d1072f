"""The watcher's rules, in process: a real store made faulty, the real watcher.

Every store fault is one log line and one failure count per poll, the next poll
tries again, and the model already serving stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from predictor.model import IrisModel
from predictor.watcher import ModelWatcher
from tests.conftest import new_s3_server, start_nanio
from training.store import open_store
from training.store.directory import DirectoryStore
from training.store.layout import POINTER_NAME, VERSIONS_DIR
from training.train import TrainedModel

NOBODY = 65534


MODEL_NAME = "iris"
# The reload counters when each watcher was made: the registry is per process.
_counted_from: dict[int, dict[str, float]] = {}


def _reloads_total(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "iris_model_reloads_total", {"model_name": MODEL_NAME, "result": result}
    )
    return value or 0.0


def new_watcher(store_uri: str) -> ModelWatcher:
    model = IrisModel(MODEL_NAME, max_rows=10_000)
    watcher = ModelWatcher(open_store(store_uri), model, 0.01, "sklearn")
    _counted_from[id(watcher)] = {
        result: _reloads_total(result) for result in ("success", "failure")
    }
    return watcher


def reloads(watcher: ModelWatcher, result: str) -> float:
    """Reloads counted with this result since the watcher was made."""
    return _reloads_total(result) - _counted_from[id(watcher)][result]


def served(watcher: ModelWatcher) -> str | None:
    serving = watcher.model.serving
    return serving.version if serving else None


def failure_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "predictor.watcher"
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def serving_watcher(root: Path, trained: TrainedModel) -> ModelWatcher:
    """A watcher serving the first version published to a directory store."""
    open_store(str(root)).publish(trained.estimator, trained.card, 5)
    watcher = new_watcher(str(root))
    watcher.check()
    assert served(watcher) is not None
    assert reloads(watcher, "success") == 1
    return watcher


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Act as UID 65534, as a pod's non-root user would: root reads through chmod."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_permission_error_is_logged_counted_and_retried(
    serving_watcher: ModelWatcher,
    root: Path,
    trained: TrainedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = served(serving_watcher)
    root.chmod(0)
    try:
        with unprivileged():
            serving_watcher.check()
            serving_watcher.check()
    finally:
        root.chmod(0o755)

    assert reloads(serving_watcher, "failure") == 2
    assert served(serving_watcher) == version
    reasons = failure_reasons(caplog)
    assert len(reasons) == 2
    assert f"still serving version={version}" in reasons[0]
    assert "Permission denied" in reasons[0]

    newer = open_store(str(root)).publish(trained.estimator, trained.card, 5)
    serving_watcher.check()
    assert served(serving_watcher) == newer.version


def test_a_symlink_loop_is_logged_counted_and_retried(
    serving_watcher: ModelWatcher,
    root: Path,
    trained: TrainedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = served(serving_watcher)
    pointer = root / POINTER_NAME
    pointer.unlink()
    pointer.symlink_to(pointer)

    serving_watcher.check()
    serving_watcher.check()

    assert reloads(serving_watcher, "failure") == 2
    assert served(serving_watcher) == version
    assert "Too many levels of symbolic links" in failure_reasons(caplog)[-1]
    pointer.unlink()
    newer = open_store(str(root)).publish(trained.estimator, trained.card, 5)
    serving_watcher.check()
    assert served(serving_watcher) == newer.version


def test_the_watcher_task_outlives_every_fault(
    serving_watcher: ModelWatcher, root: Path, trained: TrainedModel
) -> None:
    pointer = root / POINTER_NAME
    saved = pointer.read_bytes()
    pointer.unlink()
    pointer.symlink_to(pointer)

    async def run() -> str | None:
        task = asyncio.create_task(serving_watcher.run())
        try:
            while reloads(serving_watcher, "failure") < 3:
                assert not task.done()
                await asyncio.sleep(0.01)
            pointer.unlink()
            pointer.write_bytes(saved)
            newer = open_store(str(root)).publish(trained.estimator, trained.card, 5)
            while served(serving_watcher) != newer.version:
                assert not task.done()
                await asyncio.sleep(0.01)
            return newer.version
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert asyncio.run(asyncio.wait_for(run(), timeout=30)) is not None


def test_a_deleted_served_version_is_logged_and_counted(
    serving_watcher: ModelWatcher, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = served(serving_watcher)
    shutil.rmtree(root / VERSIONS_DIR / str(version))

    serving_watcher.check()

    assert reloads(serving_watcher, "failure") == 1
    assert served(serving_watcher) == version
    (reason,) = failure_reasons(caplog)
    assert f"still serving version={version}" in reason
    assert f"{root}/versions/{version}/metadata.json: missing" in reason


def test_a_deleted_store_is_logged_and_counted(
    serving_watcher: ModelWatcher, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = served(serving_watcher)
    shutil.rmtree(root)

    serving_watcher.check()
    serving_watcher.check()

    assert reloads(serving_watcher, "failure") == 2
    assert served(serving_watcher) == version
    assert f"{root}/latest.json: missing" in failure_reasons(caplog)[-1]


def test_nothing_published_yet_is_not_a_failure(root: Path) -> None:
    watcher = new_watcher(str(root))

    watcher.check()

    assert reloads(watcher, "failure") == 0
    assert served(watcher) is None


def test_a_stopped_s3_server_is_counted_and_retried(
    tmp_path: Path,
    trained: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = new_s3_server()
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IRIS_S3_TIMEOUT_SECONDS", "1")
    uri = f"s3://iris-{secrets.token_hex(4)}/models"
    data = tmp_path / "s3"
    nanio = start_nanio(server, data)
    try:
        open_store(uri).publish(trained.estimator, trained.card, 5)
        watcher = new_watcher(uri)
        watcher.check()
        version = served(watcher)
        assert version is not None
    finally:
        nanio.terminate()
        nanio.wait(timeout=10)

    watcher.check()
    watcher.check()

    assert reloads(watcher, "failure") == 2
    assert served(watcher) == version
    assert f"cannot reach {server.endpoint}" in failure_reasons(caplog)[-1]
    nanio = start_nanio(server, data)
    try:
        newer = open_store(uri).publish(trained.estimator, trained.card, 5)
        watcher.check()
        assert served(watcher) == newer.version
    finally:
        nanio.terminate()
        nanio.wait(timeout=10)


def test_a_store_root_that_is_a_file_is_logged_and_counted(
    serving_watcher: ModelWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    store = serving_watcher.store
    assert isinstance(store, DirectoryStore)
    # A store whose root is a file: every call fails with NotADirectoryError.
    shutil.rmtree(store.root)
    store.root.write_bytes(b"")

    with caplog.at_level(logging.ERROR):
        serving_watcher.check()

    assert reloads(serving_watcher, "failure") == 1
    assert "Not a directory" in failure_reasons(caplog)[-1]
