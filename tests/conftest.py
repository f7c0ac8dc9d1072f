"""Fixtures shared by every test: a real S3 server and stores on both backends."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.settings import TrainingSettings
from training.store import ModelStore, open_store
from training.train import TrainedModel, train

MLFLOW = Path(__file__).resolve().parents[1] / ".venv-mlflow" / "bin" / "mlflow"
# As training.tracking sets it for the program, before the tests import mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def environment(self) -> dict[str, str]:
        """The IRIS_S3_* variables a Secret gives the training Job and predictor."""
        return {
            "IRIS_S3_ENDPOINT": self.endpoint,
            "IRIS_S3_ACCESS_KEY_ID": self.access_key_id,
            "IRIS_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def start_nanio(server: S3Server, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start nanio for server's endpoint and keys, serving data_dir; it listens."""
    environment = {
        **os.environ,
        "NANIO_ACCESS_KEY": server.access_key_id,
        "NANIO_SECRET_KEY": server.secret_access_key,
    }
    port = int(server.endpoint.rpartition(":")[2])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanio",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=environment,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def new_s3_server() -> S3Server:
    return S3Server(
        endpoint=f"http://127.0.0.1:{free_port()}",
        access_key_id="iris-test",
        secret_access_key=secrets.token_urlsafe(24),
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server on 127.0.0.1: nanio, which verifies SigV4 signatures."""
    server = new_s3_server()
    process = start_nanio(server, tmp_path_factory.mktemp("nanio"))
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """moto's S3 in server mode on 127.0.0.1: unlike nanio, it enforces conditional
    writes (If-Match, If-None-Match), which compare-and-swap publishing relies on."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        # moto accepts any credentials; these only have to be present.
        yield S3Server(f"http://127.0.0.1:{port}", "moto-test", "moto-test-secret")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server on 127.0.0.1 (SQLite, local artifacts), from .venv-mlflow
    (``make mlflow-server``: the server's ~90 pins stay out of .venv); its URI."""
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} is missing: run make mlflow-server")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL,
        stderr=(root / "server.log").open("wb"),
    )
    try:
        # The first start migrates the SQLite schema, which takes a while.
        wait_for_port(port, process, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point this process's IRIS_S3_* settings at the test S3 server."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def bucket_uri() -> str:
    """A fresh bucket and prefix for one test."""
    return f"s3://iris-{secrets.token_hex(4)}/models/iris"


@pytest.fixture(params=["directory", "bucket"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A model URI on each backend: a local directory, then an S3 bucket."""
    if request.param == "directory":
        return str(tmp_path / "models")
    request.getfixturevalue("s3_env")
    return str(request.getfixturevalue("bucket_uri"))


@pytest.fixture
def store(store_uri: str) -> ModelStore:
    return open_store(store_uri)


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    """A small forest trained on the real data set by the real training code."""
    return train(TrainingSettings(n_estimators=5))
