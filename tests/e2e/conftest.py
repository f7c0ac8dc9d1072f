"""The installed release on a real cluster (make kind-up), reached as a user reaches it.

These tests run only with ``-m e2e`` (``make e2e``). Without a reachable cluster they
skip, unless IRIS_REQUIRE_CLUSTER=1 (the kind job sets it), when they fail.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client, config

NAMESPACE = os.environ.get("IRIS_E2E_NAMESPACE", "iris")
RELEASE = os.environ.get("IRIS_E2E_RELEASE", "iris")
# pvc or minio, as make kind-up STORAGE=... installed it.
STORAGE = os.environ.get("IRIS_E2E_STORAGE", "pvc")
# k8s/kind-config.yaml maps the Service's node port to this port on localhost.
NODE_PORT = 30080
KSERVE_EXAMPLE = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
JSON = {"Content-Type": "application/json"}


def selector(component: str) -> str:
    """The chart's labels for one component's pods of this release."""
    return (
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
    )


@dataclass(frozen=True)
class Cluster:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    batch: client.BatchV1Api
    autoscaling: client.AutoscalingV2Api
    custom: client.CustomObjectsApi


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    try:
        config.load_kube_config()  # type: ignore[no-untyped-call]
        core = client.CoreV1Api()
        core.read_namespace(NAMESPACE)
    # Anything from a missing kubeconfig to a refused connection: no cluster here.
    except Exception as error:  # noqa: BLE001
        if os.environ.get("IRIS_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"no cluster with namespace {NAMESPACE}: {error}")
        pytest.skip(f"no cluster with namespace {NAMESPACE}: {error}")
    return Cluster(
        core=core,
        apps=client.AppsV1Api(),
        batch=client.BatchV1Api(),
        autoscaling=client.AutoscalingV2Api(),
        custom=client.CustomObjectsApi(),
    )


def post(port: int, path: str, body: Any) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), JSON)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def get(port: int, path: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@dataclass
class Load:
    """Clients predicting through the node port until stopped; counts every failure."""

    clients: int = 4
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        connection: http.client.HTTPConnection | None = None
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 4],
                        "datatype": "FP32",
                        "data": [v for row in KSERVE_EXAMPLE["instances"] for v in row],
                    }
                ]
            }
        )
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(
                        "127.0.0.1", NODE_PORT, timeout=10
                    )
                connection.request("POST", "/v2/models/iris/infer", body, JSON)
                response = connection.getresponse()
                answer = response.read()
                with self._lock:
                    if response.status == 200:
                        self.answered += 1
                        self.versions.add(json.loads(answer)["model_version"])
                    else:
                        self.failed.append(f"{response.status} {answer[:200]!r}")
            except (OSError, http.client.HTTPException) as error:
                with self._lock:
                    self.failed.append(f"{type(error).__name__}: {error}")
                connection = None
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._client, daemon=True)
            for _ in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def failure_ratio(self) -> float:
        total = self.answered + len(self.failed)
        return len(self.failed) / total if total else 1.0


@pytest.fixture
def load() -> Load:
    return Load()
