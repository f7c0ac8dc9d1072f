"""Without static keys the S3 client takes the AWS credential chain, on a real S3."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import S3Server, free_port
from tests.unit.test_training import run_training
from training.gate import ExitCode
from training.store import StoreError, StoreUnavailableError, open_store
from training.train import TrainedModel

CREDENTIALS_PATH = "/v2/credentials/iris"


@pytest.fixture
def no_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_server: S3Server
) -> dict[str, str]:
    """An environment with the endpoint but no keys anywhere the chain looks; the
    container credentials endpoint is a closed port on 127.0.0.1."""
    for name in (
        "IRIS_S3_ACCESS_KEY_ID",
        "IRIS_S3_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_ACCESS_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECRET_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    environment = {
        "IRIS_S3_ENDPOINT": s3_server.endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "absent-credentials"),
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": (
            f"http://127.0.0.1:{free_port()}{CREDENTIALS_PATH}"
        ),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def credentials_endpoint(s3_server: S3Server) -> Iterator[str]:
    """A container credentials endpoint (as ECS or EKS Pod Identity serve) on
    127.0.0.1, handing out the S3 server's keys."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                {
                    "AccessKeyId": s3_server.access_key_id,
                    "SecretAccessKey": s3_server.secret_access_key,
                    "Token": "",
                    "Expiration": (datetime.now(UTC) + timedelta(hours=1)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    ),
                }
            ).encode()
            status = 200 if self.path == CREDENTIALS_PATH else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{CREDENTIALS_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def assert_publishes_and_loads(bucket_uri: str, trained: TrainedModel) -> None:
    store = open_store(bucket_uri)

    metadata = store.publish(trained.estimator, trained.card, keep_versions=5)

    loaded = store.load_current()
    assert loaded is not None
    assert loaded.metadata == metadata


def test_keys_from_the_aws_environment_publish_and_load(
    no_credentials: dict[str, str],
    s3_server: S3Server,
    bucket_uri: str,
    trained: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    assert_publishes_and_loads(bucket_uri, trained)


def test_keys_from_the_container_credentials_endpoint_publish_and_load(
    no_credentials: dict[str, str],
    credentials_endpoint: str,
    bucket_uri: str,
    trained: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", credentials_endpoint)
    assert_publishes_and_loads(bucket_uri, trained)


def test_no_credentials_anywhere_is_a_store_error(
    no_credentials: dict[str, str], bucket_uri: str
) -> None:
    store = open_store(bucket_uri)

    with pytest.raises(StoreUnavailableError, match="no S3 credentials"):
        store.load_current()


def test_one_static_key_without_the_other_is_a_store_error(
    no_credentials: dict[str, str],
    s3_server: S3Server,
    bucket_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IRIS_S3_ACCESS_KEY_ID", s3_server.access_key_id)

    with pytest.raises(StoreError, match="go together"):
        open_store(bucket_uri)


def test_the_job_without_credentials_exits_5_without_a_traceback(
    no_credentials: dict[str, str], bucket_uri: str
) -> None:
    result = run_training("--model_uri", bucket_uri, env=no_credentials)

    assert result.returncode == ExitCode.STORE_ERROR, result.stderr
    assert "no S3 credentials" in result.stderr
    assert "Traceback" not in result.stderr
