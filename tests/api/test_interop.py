"""Third-party HTTP clients against a real predictor: NVIDIA's tritonclient (binary
and JSON tensors, FP32 and FP64), KServe's InferenceRESTClient (v1 and v2) and curl,
each driving inference, readiness, metadata and a hot reload."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.api.conftest import PredictorProcess, serving
from training.store import ModelStore, open_store
from training.train import TrainedModel

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4], [7.6, 3.0, 6.6, 2.2]]
CLASSES = [0, 1, 2]


class Served:
    def __init__(self, server: PredictorProcess, store: ModelStore, version: str):
        self.server = server
        self.store = store
        self.version = version

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
def served(
    default_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("interop")
    store = open_store(str(root / "models"))
    version = store.publish(default_model.estimator, default_model.card, 5).version
    with serving(
        root / "predictor.log",
        "--model_uri",
        str(root / "models"),
        "--reload_interval_seconds",
        "0.2",
    ) as server:
        yield Served(server, store, version)


def triton_version(served: Served, binary: bool, datatype: str) -> str:
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris")
        assert client.get_model_metadata("iris")["name"] == "iris"
        tensor = triton.InferInput("input-0", [3, 4], datatype)
        dtype = np.float32 if datatype == "FP32" else np.float64
        tensor.set_data_from_numpy(np.array(ROWS, dtype=dtype), binary_data=binary)
        outputs = [
            triton.InferRequestedOutput(name, binary_data=binary)
            for name in ("predict", "probabilities")
        ]
        result = client.infer("iris", [tensor], outputs=outputs)
        assert result.as_numpy("predict").tolist() == CLASSES
        assert result.as_numpy("probabilities").shape == (3, 3)
        return str(result.get_response()["model_version"])
    finally:
        client.close()


def kserve_version(served: Served) -> str | None:
    """None: KServe 0.21's client decodes every v2 answer with InferResponse.from_bytes,
    which drops model_version."""

    async def drive() -> str | None:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            assert await v1.is_server_live(served.url)
            assert await v1.is_model_ready(served.url, "iris")
            assert await v2.is_server_ready(served.url)
            assert await v2.is_model_ready(served.url, "iris")
            answer = await v1.infer(served.url, {"instances": ROWS}, model_name="iris")
            assert answer == {"predictions": CLASSES}
            tensor = InferInput("input-0", [3, 4], "FP64")
            tensor.set_data_from_numpy(
                np.array(ROWS, dtype=np.float64), binary_data=False
            )
            response = await v2.infer(
                served.url, InferRequest("iris", [tensor]), model_name="iris"
            )
            outputs = {output.name: output for output in response.outputs}
            assert outputs["predict"].data == CLASSES
            return response.model_version  # type: ignore[no-any-return]
        finally:
            await v1.close()
            await v2.close()

    return asyncio.run(drive())


def curl(served: Served, path: str, body: object = None) -> tuple[int, Any]:
    command = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", served.url + path]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    text, _, status = output.rpartition("\n")
    return int(status), json.loads(text)


def curl_version(served: Served) -> str:
    assert curl(served, "/v1/models/iris") == (200, {"name": "iris", "ready": True})
    assert curl(served, "/v2/health/ready") == (200, {"ready": True})
    status, metadata = curl(served, "/v1/models/iris/metadata")
    assert status == 200
    assert curl(served, "/v1/models/iris:predict", {"instances": ROWS}) == (
        200,
        {"predictions": CLASSES},
    )
    status, answer = curl(
        served,
        "/v2/models/iris/infer",
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, 4],
                    "datatype": "FP32",
                    "data": [value for row in ROWS for value in row],
                }
            ]
        },
    )
    assert status == 200
    assert answer["outputs"][0]["data"] == CLASSES
    assert answer["model_version"] == metadata["version"]
    return str(answer["model_version"])


KSERVE = "kserve InferenceRESTClient"
CLIENTS: dict[str, Callable[[Served], str | None]] = {
    "tritonclient binary FP32": lambda served: triton_version(served, True, "FP32"),
    "tritonclient binary FP64": lambda served: triton_version(served, True, "FP64"),
    "tritonclient JSON FP32": lambda served: triton_version(served, False, "FP32"),
    "tritonclient JSON FP64": lambda served: triton_version(served, False, "FP64"),
    KSERVE: kserve_version,
    "curl": curl_version,
}


def expected_versions(version: str) -> dict[str, str | None]:
    return {name: None if name == KSERVE else version for name in CLIENTS}


@pytest.mark.parametrize("name", CLIENTS)
def test_a_client_drives_inference_readiness_and_metadata(
    served: Served, name: str
) -> None:
    assert CLIENTS[name](served) == expected_versions(served.version)[name]


def test_every_client_sees_a_hot_reload(
    served: Served, default_model: TrainedModel
) -> None:
    version = served.store.publish(
        default_model.estimator, default_model.card, 5
    ).version
    assert version != served.version
    deadline = time.monotonic() + 30
    seen: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        seen = {name: client(served) for name, client in CLIENTS.items()}
        if seen == expected_versions(version):
            break
        time.sleep(0.2)
    assert seen == expected_versions(version), Path(served.server.log_path).read_text()[
        -2000:
    ]
    served.version = version
