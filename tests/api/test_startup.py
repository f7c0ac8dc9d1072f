"""Start-up never waits for the store: the port opens, liveness answers, readiness
says 503 until a model loads."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.api.conftest import (
    PredictorProcess,
    predictor_command,
    predictor_environment,
)
from tests.conftest import S3Server
from training.store import open_store
from training.train import TrainedModel


class HeldEndpoint:
    """A TCP endpoint on 127.0.0.1 that accepts connections and answers nothing
    (a blackholed S3) until released; then it relays them to the real server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.released = threading.Event()
        self.accepted = 0
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.accepted += 1
                self._sockets.append(client)
                threading.Thread(target=self._hold, args=(client,), daemon=True).start()

    def _hold(self, client: socket.socket) -> None:
        self.released.wait()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self._sockets.append(upstream)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self.released.set()
        for each in self._sockets:
            with contextlib.suppress(OSError):
                each.close()


def _pipe(source: socket.socket, destination: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            destination.sendall(data)
    with contextlib.suppress(OSError):
        destination.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def held_endpoint(target_port: int) -> Iterator[HeldEndpoint]:
    endpoint = HeldEndpoint(target_port)
    try:
        yield endpoint
    finally:
        endpoint.close()


def test_a_blackholed_store_delays_readiness_not_the_port(
    start_predictor: Any,
    s3_server: S3Server,
    bucket_uri: str,
    s3_env: S3Server,
    default_model: TrainedModel,
) -> None:
    published = open_store(bucket_uri).publish(
        default_model.estimator, default_model.card, 5
    )
    nanio_port = int(s3_server.endpoint.rpartition(":")[2])
    with held_endpoint(nanio_port) as endpoint:
        # A read timeout longer than the wait for the port: a start-up that loads
        # before it listens could never open the port in time.
        server: PredictorProcess = start_predictor(
            "--model_uri",
            bucket_uri,
            env={
                **s3_server.environment(),
                "IRIS_S3_ENDPOINT": f"http://127.0.0.1:{endpoint.port}",
                "IRIS_S3_TIMEOUT_SECONDS": "120",
            },
        )
        deadline = time.monotonic() + 30
        while endpoint.accepted == 0:
            assert time.monotonic() < deadline, "the predictor never asked the store"
            time.sleep(0.05)

        assert server.request("GET", "/") == (200, {"status": "alive"})
        assert server.request("GET", "/v2/health/live") == (200, {"live": True})
        assert server.request("GET", "/v1/models/iris")[0] == 503
        assert server.request("GET", "/v2/health/ready")[0] == 503
        assert server.predict([[5.1, 3.5, 1.4, 0.2]])[0] == 503

        endpoint.released.set()
        server.wait_until("/v1/models/iris", 200)
        status, metadata = server.request("GET", "/v1/models/iris/metadata")
        assert (status, metadata["version"]) == (200, published.version)
        assert server.predict([[5.1, 3.5, 1.4, 0.2]]) == (200, {"predictions": [0]})


def test_the_server_runs_on_the_event_loop_kserves_flag_names(
    predictor: PredictorProcess, published_default: Path, start_predictor: Any
) -> None:
    # KServe's "auto" by default: uvloop, which is installed.
    assert predictor.predict([[6.8, 2.8, 4.8, 1.4]]) == (200, {"predictions": [1]})
    assert any("/uvloop/" in path for path in predictor.mapped_files())
    chosen = start_predictor(
        "--model_uri", str(published_default), "--event-loop", "asyncio"
    )
    chosen.wait_until("/v1/models/iris", 200)
    assert chosen.predict([[6.8, 2.8, 4.8, 1.4]]) == (200, {"predictions": [1]})
    assert not any("/uvloop/" in path for path in chosen.mapped_files())


def test_a_port_in_use_fails_the_start(published_default: Path) -> None:
    # The port is bound once, without SO_REUSEPORT: a second server cannot share it.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = subprocess.run(
            predictor_command(port, "--model_uri", str(published_default)),
            env=predictor_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert started.returncode != 0
    assert "Address already in use" in started.stdout + started.stderr
