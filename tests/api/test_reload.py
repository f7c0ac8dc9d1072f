"""Hot reload: new versions are swapped in under load without failing a request."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.api.conftest import JSON, PredictorProcess, send, wait_for_failures
from tests.conftest import S3Server
from training.settings import TrainingSettings
from training.store import ModelStore, open_store
from training.train import TrainedModel, train

CLIENTS = 4
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4], [7.6, 3.0, 6.6, 2.2]]
V2_BODY = {
    "inputs": [
        {
            "name": "x",
            "shape": [3, 4],
            "datatype": "FP64",
            "data": [value for row in ROWS for value in row],
        }
    ]
}


class Load:
    """Clients sending v1 and v2 requests on kept-alive connections until stopped."""

    def __init__(self, server: PredictorProcess) -> None:
        self.server = server
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.versions: list[str] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self) -> None:
        connection = self.server.connection()
        try:
            while not self.stop.is_set():
                status, body = send(
                    connection,
                    "POST",
                    "/v1/models/iris:predict",
                    {"instances": ROWS},
                    JSON,
                )
                self.statuses.append(status)
                status, body = send(
                    connection, "POST", "/v2/models/iris/infer", V2_BODY, JSON
                )
                self.statuses.append(status)
                if status == 200:
                    self.versions.append(body["model_version"])
        # Any exception is a failed request, which is what this test looks for.
        except BaseException as error:  # noqa: BLE001
            self.errors.append(error)
        finally:
            connection.close()


def served_version(server: PredictorProcess) -> str:
    status, body = server.request("GET", "/v1/models/iris/metadata")
    assert status == 200
    return str(body["version"])


def wait_for_version(
    server: PredictorProcess, version: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_version(server) == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"version {version} was never served; log:\n{server.log()}")


def publish_versions_under_load(server: PredictorProcess, store: ModelStore) -> None:
    challengers = [
        train(TrainingSettings(algorithm="decision_tree")),
        train(TrainingSettings(n_estimators=20)),
        train(TrainingSettings(n_estimators=80)),
    ]
    published = []
    with Load(server) as load:
        for challenger in challengers:
            version = store.publish(challenger.estimator, challenger.card, 5).version
            wait_for_version(server, version)
            published.append(version)
            time.sleep(0.3)

    assert load.errors == []
    assert load.statuses
    assert set(load.statuses) == {200}
    assert set(published) <= set(load.versions)
    assert (
        server.metric("iris_model_reloads_total", model_name="iris", result="success")
        == 4
    )


def test_new_versions_are_swapped_in_under_load_without_a_failed_request(
    start_predictor: Any, tmp_path: Path, default_model: TrainedModel
) -> None:
    store = open_store(str(tmp_path / "models"))
    store.publish(default_model.estimator, default_model.card, 5)
    server = start_predictor(
        "--model_uri", str(tmp_path / "models"), "--reload_interval_seconds", "0.1"
    )
    server.wait_until("/v1/models/iris", 200)

    publish_versions_under_load(server, store)


def test_the_predictor_loads_and_reloads_from_a_bucket(
    start_predictor: Any,
    s3_server: S3Server,
    bucket_uri: str,
    s3_env: S3Server,
    default_model: TrainedModel,
) -> None:
    store = open_store(bucket_uri)
    first = store.publish(default_model.estimator, default_model.card, 5)
    server = start_predictor(
        "--model_uri",
        bucket_uri,
        "--reload_interval_seconds",
        "0.1",
        env=s3_server.environment(),
    )
    server.wait_until("/v1/models/iris", 200)
    assert served_version(server) == first.version
    assert server.predict(ROWS) == (200, {"predictions": [0, 1, 2]})

    publish_versions_under_load(server, store)


def test_a_wrong_secret_leaves_the_predictor_alive_not_ready_and_says_why(
    start_predictor: Any,
    s3_server: S3Server,
    bucket_uri: str,
    s3_env: S3Server,
    default_model: TrainedModel,
) -> None:
    open_store(bucket_uri).publish(default_model.estimator, default_model.card, 5)
    environment = {**s3_server.environment(), "IRIS_S3_SECRET_ACCESS_KEY": "wrong"}

    server = start_predictor(
        "--model_uri", bucket_uri, "--reload_interval_seconds", "0.1", env=environment
    )
    # Counted at every poll, so the reload-failure alert fires.
    wait_for_failures(server, 2)

    assert server.request("GET", "/")[0] == 200
    assert server.request("GET", "/v1/models/iris")[0] == 503
    # The watcher's cheap check is a HEAD request, whose 403 carries no error body.
    assert "refused the request: AccessDenied" in server.log()


def test_a_store_fault_is_counted_and_hot_reload_survives_it(
    start_predictor: Any, tmp_path: Path, default_model: TrainedModel
) -> None:
    root = tmp_path / "models"
    store = open_store(str(root))
    first = store.publish(default_model.estimator, default_model.card, 5)
    server = start_predictor(
        "--model_uri", str(root), "--reload_interval_seconds", "0.1"
    )
    server.wait_until("/v1/models/iris", 200)
    pointer = root / "latest.json"
    saved = pointer.read_bytes()
    pointer.unlink()
    pointer.symlink_to(pointer)

    wait_for_failures(server, 3)

    assert served_version(server) == first.version
    lines = [line for line in server.log().splitlines() if "model load failed" in line]
    assert f"still serving version={first.version}" in lines[-1]
    assert "Too many levels of symbolic links" in lines[-1]
    pointer.unlink()
    pointer.write_bytes(saved)
    second = store.publish(default_model.estimator, default_model.card, 5)
    wait_for_version(server, second.version)
