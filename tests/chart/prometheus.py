"""A real Prometheus for the tests: Debian's ``prometheus`` package and its promtool.

The package's own service never matters here: the tests run the binary themselves,
on 127.0.0.1, with a configuration and a data directory of their own.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, wait_for_port


def tool(name: str) -> str:
    """The path of promtool or prometheus; a skip without it, a failure in CI."""
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is missing: apt-get install prometheus (.ci/run does)"
        if os.environ.get("IRIS_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"IRIS_REQUIRE_PROMETHEUS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, check=False
    )


def write_yaml(path: Path, content: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(content), sort_keys=False))
    return path


class Prometheus:
    """A Prometheus server's HTTP API."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _request(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _get(self, path: str, **params: str) -> Any:
        status, data = self._request(f"{path}?{urllib.parse.urlencode(params)}")
        body = json.loads(data)
        assert status == 200, body
        assert body["status"] == "success", body
        return body["data"]

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Wait for /-/ready: the API answers 503 until the TSDB is open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}")
            try:
                if self._request("/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus was not ready within {timeout}s")

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query at now: its samples as {"metric": labels, "value": v}."""
        data = self._get("/api/v1/query", query=expression)
        assert data["resultType"] == "vector", (expression, data)
        return [
            {"metric": sample["metric"], "value": float(sample["value"][1])}
            for sample in data["result"]
        ]

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's label_values(match, label) asks Prometheus for."""
        values: list[str] = self._get(
            f"/api/v1/label/{label}/values", **{"match[]": match}
        )
        return values

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def wait_for(self, expression: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll an instant query until it returns a sample; its samples."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.query(expression)
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{expression} returned nothing within {timeout}s")

    def wait_for_scrape_after(self, moment: float, job: str) -> None:
        """Wait until a scrape of the job began after a Unix time."""
        self.wait_for(f'timestamp(up{{job="{job}"}}) > {moment:.3f}')


def finite(samples: list[dict[str, Any]]) -> bool:
    return bool(samples) and all(math.isfinite(each["value"]) for each in samples)


@contextmanager
def running_prometheus(
    config: Mapping[str, Any], directory: Path
) -> Iterator[Prometheus]:
    """``prometheus`` with this configuration, until the block ends."""
    port = free_port()
    config_file = write_yaml(directory / "prometheus.yml", config)
    checked = promtool("check", "config", str(config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = open(directory / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
        server = Prometheus(port)
        server.wait_ready(process)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
