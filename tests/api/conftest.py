"""A real predictor process on a real port, and the models it serves."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.conftest import free_port, wait_for_port
from training.settings import TrainingSettings
from training.store import open_store
from training.train import TrainedModel, train

JSON = {"Content-Type": "application/json"}


def predictor_command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "predictor", "--http_port", str(port), *args]


def predictor_environment() -> dict[str, str]:
    """This process's environment without its IRIS_ settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    # Every stop() would otherwise wait out the 3 s default drain; tests of the
    # drain pass --drain_seconds, which wins over this variable.
    environment["IRIS_DRAIN_SECONDS"] = "0"
    return environment


class PredictorProcess:
    """``python -m predictor`` started as a Deployment's container would start it;
    with ``with_grpc``, its gRPC v2 port open too and a stub to call it."""

    def __init__(
        self,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        with_grpc: bool = False,
    ):
        self.port = free_port()
        self.grpc_port = free_port() if with_grpc else None
        self.log_path = log_path
        if self.grpc_port is not None:
            args = (*args, "--enable_grpc", "true", "--grpc_port", str(self.grpc_port))
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            predictor_command(self.port, *args),
            env={**predictor_environment(), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process, timeout=60)
        self._channel: grpc.Channel | None = None
        if self.grpc_port is not None:
            wait_for_port(self.grpc_port, self.process)

    @property
    def grpc_address(self) -> str:
        assert self.grpc_port is not None, "started without with_grpc=True"
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def stub(self) -> GRPCInferenceServiceStub:
        """A stub on one channel to the gRPC port, kept until stop()."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_address)
        return GRPCInferenceServiceStub(self._channel)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request on a new connection; a body not bytes or str is sent as JSON."""
        connection = self.connection()
        try:
            return send(connection, method, path, body, headers)
        finally:
            connection.close()

    def predict(self, instances: object) -> tuple[int, Any]:
        return self.request(
            "POST", "/v1/models/iris:predict", {"instances": instances}, JSON
        )

    def wait_until(self, path: str, status: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("GET", path)[0] == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"GET {path} never answered {status}; log:\n{self.log()}")

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics, 0 if it is not there yet."""
        status, text = self.request("GET", "/metrics")
        assert status == 200
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] == name and _labels(series) == wanted:
                return float(value)
        return 0.0

    def peak_rss_bytes(self) -> int:
        """The most memory the process has held resident so far (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmHWM for pid {self.process.pid}")

    def mapped_files(self) -> set[str]:
        """The files the process has mapped into its memory: its code among them."""
        maps = Path(f"/proc/{self.process.pid}/maps").read_text()
        return {line.split()[-1] for line in maps.splitlines() if "/" in line}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self._channel is not None:
            self._channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def wait_for_failures(
    server: PredictorProcess, count: int, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            server.metric(
                "iris_model_reloads_total", model_name="iris", result="failure"
            )
            >= count
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} failed loads; log:\n{server.log()}")


def _labels(series: str) -> str:
    if "{" not in series:
        return ""
    inside = series[series.index("{") + 1 : series.rindex("}")]
    return ",".join(sorted(part for part in inside.split(",") if part))


def send(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on an open connection; a JSON answer comes back decoded."""
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    if response.getheader("content-type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data.decode()


@contextlib.contextmanager
def serving(
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    with_grpc: bool = False,
) -> Iterator[PredictorProcess]:
    """A predictor that has loaded its model; it must exit cleanly when stopped."""
    server = PredictorProcess(log_path, *args, env=env, with_grpc=with_grpc)
    try:
        server.wait_until("/v1/models/iris", 200)
        yield server
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="session")
def default_model() -> TrainedModel:
    """The model `make run` trains: a 50-tree forest with the default settings."""
    return train(TrainingSettings())


@pytest.fixture(scope="session")
def published_default(
    default_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("models")
    open_store(str(root)).publish(default_model.estimator, default_model.card, 5)
    return root


@pytest.fixture(scope="session")
def predictor(
    published_default: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PredictorProcess]:
    """One predictor serving the default model, shared by tests that only read."""
    with serving(
        tmp_path_factory.mktemp("logs") / "predictor.log",
        "--model_uri",
        str(published_default),
    ) as server:
        yield server


@pytest.fixture
def start_predictor(tmp_path: Path) -> Iterator[Any]:
    """Start predictors for one test; each is stopped when the test ends."""
    started: list[PredictorProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, with_grpc: bool = False
    ) -> PredictorProcess:
        server = PredictorProcess(
            tmp_path / f"predictor-{len(started)}.log",
            *args,
            env=env,
            with_grpc=with_grpc,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
