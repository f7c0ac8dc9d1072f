"""gRPC v2, spoken by Triton's client and KServe's to a real predictor process.

Raw and typed tensors, FP32 and FP64, readiness, metadata, a hot reload; the
repository API refused; REST's limits and validation, with a status that says the
client is at fault (never UNKNOWN or INTERNAL); calls counted on /metrics.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from tests.api import triton_grpc
from tests.api.conftest import JSON, PredictorProcess, serving
from training.store import open_store
from training.train import TrainedModel

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.5, 2.8, 4.6, 1.5], [7.6, 3.0, 6.6, 2.2]]
LIMIT = 1024 * 1024
V2_BODY = {
    "inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROWS[0]},
    ]
}


@pytest.fixture(scope="module")
def store_root(
    default_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("grpc-models")
    open_store(str(root)).publish(default_model.estimator, default_model.card, 5)
    return root


@pytest.fixture(scope="module")
def server(
    store_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PredictorProcess]:
    with serving(
        tmp_path_factory.mktemp("grpc-logs") / "predictor.log",
        "--model_uri",
        str(store_root),
        "--reload_interval_seconds",
        "0.1",
        with_grpc=True,
    ) as started:
        yield started


def expected_probabilities(model: TrainedModel, datatype: str) -> Any:
    rows = np.array(ROWS, dtype=np.float32 if datatype == "FP32" else np.float64)
    return model.estimator.predict_proba(rows.astype(np.float64))


def test_triton_raw_tensors_fp32_and_fp64_are_answered(
    server: PredictorProcess, default_model: TrainedModel
) -> None:
    answers = triton_grpc.run(server.grpc_address, "--infer", "FP32", "--infer", "FP64")

    for datatype in ("FP32", "FP64"):
        answer = answers[datatype]
        assert answer["predict"] == [0, 1, 2]
        assert (
            answer["probabilities"]
            == expected_probabilities(default_model, datatype).tolist()
        )
        assert answer["model_version"] == served_version(server)


def test_triton_readiness_and_metadata(server: PredictorProcess) -> None:
    answers = triton_grpc.run(server.grpc_address, "--describe")

    assert answers["live"] is True
    assert answers["ready"] is True
    assert answers["model_ready"] is True
    assert answers["unknown_model"] == "StatusCode.NOT_FOUND"
    metadata = answers["metadata"]
    assert metadata["name"] == "iris"
    assert metadata["inputs"] == [
        {"name": "input-0", "datatype": "FP32", "shape": ["-1", "4"]}
    ]
    assert [output["name"] for output in metadata["outputs"]] == [
        "predict",
        "probabilities",
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_kserve_grpc_client_typed_and_raw(
    server: PredictorProcess, default_model: TrainedModel, binary: bool, datatype: str
) -> None:
    async def talk() -> tuple[Any, bool, bool]:
        client = InferenceGRPCClient(server.grpc_address)
        try:
            tensor = InferInput("input-0", [3, 4], datatype)
            tensor.set_data_from_numpy(
                np.array(ROWS, dtype=np.float32 if datatype == "FP32" else np.float64),
                binary_data=binary,
            )
            request = InferRequest(model_name="iris", infer_inputs=[tensor])
            request.request_outputs = None
            answer = await client.infer(request)
            return (
                answer,
                await client.is_server_ready(),
                await client.is_model_ready("iris"),
            )
        finally:
            await client.close()

    answer, server_ready, model_ready = asyncio.run(talk())

    assert answer.outputs[0].name == "predict"
    assert answer.outputs[0].as_numpy().tolist() == [0, 1, 2]
    assert server_ready is True
    assert model_ready is True


def test_the_repository_api_is_refused_and_breaks_nothing(
    server: PredictorProcess,
) -> None:
    for call, request in [
        (server.stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest),
        (server.stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            call(request(model_name="iris"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == (
            "the model repository API is disabled on this server"
        )

    assert server.request("GET", "/v1/models/iris")[0] == 200
    assert server.request("POST", "/v2/models/iris/infer", V2_BODY, JSON)[0] == 200
    assert server.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert server.stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    assert triton_grpc.run(server.grpc_address, "--infer", "FP32")["FP32"][
        "predict"
    ] == [
        0,
        1,
        2,
    ]


def raw_request(
    rows: Any, datatype: str = "FP32", **fields: Any
) -> pb.ModelInferRequest:
    array = np.asarray(rows, dtype=np.float32 if datatype == "FP32" else np.float64)
    return pb.ModelInferRequest(
        model_name=fields.pop("model_name", "iris"),
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input-0", datatype=datatype, shape=list(array.shape)
            )
        ],
        raw_input_contents=[fields.pop("raw", array.tobytes())],
        **fields,
    )


def typed_request(values: list[float], shape: list[int]) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="iris",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input-0",
                datatype="FP64",
                shape=shape,
                contents=pb.InferTensorContents(fp64_contents=values),
            )
        ],
    )


MISTAKES = {
    "too many rows": (
        raw_request([ROWS[0]] * 10_001),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" has 10001 rows, more than the limit of 10000',
    ),
    "a value out of range": (
        raw_request([[5.1, 3.5, 1.4, 1000.0]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" row 0 column 3 = 1000 is outside petal_width\'s accepted '
        "range",
    ),
    "NaN": (
        raw_request([[5.1, 3.5, float("nan"), 0.2]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" row 0 column 2 = nan is outside petal_length\'s accepted',
    ),
    "three features": (
        raw_request([[5.1, 3.5, 1.4]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" has shape [1, 3], expected [N, 4] with N >= 1',
    ),
    "raw bytes that are no whole FP32": (
        raw_request([ROWS[0]], raw=b"\x00" * 15),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents[0] has 15 bytes, not a whole number of FP32 values",
    ),
    "raw bytes for fewer values than the shape": (
        raw_request([ROWS[0]], raw=b"\x00" * 8),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" has 2 values, its shape needs 4',
    ),
    "an INT64 tensor": (
        pb.ModelInferRequest(
            model_name="iris",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="input-0",
                    datatype="INT64",
                    shape=[1, 4],
                    contents=pb.InferTensorContents(int64_contents=[5, 3, 1, 0]),
                )
            ],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" has datatype INT64, expected FP32 or FP64',
    ),
    "an unknown datatype": (
        pb.ModelInferRequest(
            model_name="iris",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="input-0", datatype="FP128", shape=[1, 4]
                )
            ],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "",
    ),
    "typed values short of the shape": (
        typed_request([5.1, 3.5], [1, 4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        'input "input-0" has 2 values, its shape needs 4',
    ),
    "no inputs": (
        pb.ModelInferRequest(model_name="iris"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected exactly one input tensor of shape [N, 4], got 0",
    ),
    "more raw contents than inputs": (
        pb.ModelInferRequest(
            model_name="iris",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="input-0", datatype="FP32", shape=[1, 4]
                )
            ],
            raw_input_contents=[b"\x00" * 16, b"\x00" * 16],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "",
    ),
    "an unknown output": (
        raw_request(
            [ROWS[0]],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="x")],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        'unknown output "x": this model has outputs predict, probabilities',
    ),
    "an unknown model": (
        raw_request([ROWS[0]], model_name="setosa"),
        grpc.StatusCode.NOT_FOUND,
        "Model with name setosa does not exist.",
    ),
    "a model version": (
        raw_request([ROWS[0]], model_version="1"),
        grpc.StatusCode.NOT_FOUND,
        "model versions are not addressable",
    ),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_client_mistakes_get_a_status_that_says_so(
    server: PredictorProcess, case: str
) -> None:
    request, code, details = MISTAKES[case]

    with pytest.raises(grpc.RpcError) as refused:
        server.stub.ModelInfer(request)

    assert refused.value.code() == code, refused.value.details()
    assert details in (refused.value.details() or "")
    assert server.stub.ModelInfer(raw_request(ROWS)).outputs[0].name == "predict"


def test_a_message_over_the_rest_body_limit_is_refused(
    server: PredictorProcess,
) -> None:
    rows = np.tile(np.array([ROWS[0]], dtype=np.float32), (LIMIT // 16 + 1, 1))
    assert rows.nbytes > LIMIT

    with pytest.raises(grpc.RpcError) as refused:
        server.stub.ModelInfer(raw_request(rows))

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    just_under = np.tile(np.array([ROWS[0]]), (8000, 1))
    assert just_under.nbytes < LIMIT
    assert len(server.stub.ModelInfer(raw_request(just_under, "FP64")).outputs) == 1


def test_calls_are_counted_on_the_metrics_page(server: PredictorProcess) -> None:
    def count(method: str, code: str) -> float:
        value: float = server.metric(
            "iris_grpc_requests_total", method=method, code=code
        )
        return value

    predictions_before = server.metric(
        "iris_predictions_total", model_name="iris", **{"class": "virginica"}
    )
    ok_before = count("ModelInfer", "OK")
    invalid_before = count("ModelInfer", "INVALID_ARGUMENT")

    server.stub.ModelInfer(raw_request(ROWS))
    with pytest.raises(grpc.RpcError):
        server.stub.ModelInfer(raw_request([[1.0, 2.0, 3.0]]))

    assert count("ModelInfer", "OK") == ok_before + 1
    assert count("ModelInfer", "INVALID_ARGUMENT") == invalid_before + 1
    assert (
        server.metric(
            "iris_predictions_total", model_name="iris", **{"class": "virginica"}
        )
        == predictions_before + 1
    )
    assert (
        server.metric("iris_grpc_request_duration_seconds_count", method="ModelInfer")
        >= 2
    )


def served_version(server: PredictorProcess) -> str:
    status, body = server.request("GET", "/v1/models/iris/metadata")
    assert status == 200
    return str(body["version"])


def test_a_hot_reload_is_seen_by_both_clients(
    server: PredictorProcess, store_root: Path, default_model: TrainedModel
) -> None:
    before = served_version(server)
    newer = open_store(str(store_root)).publish(
        default_model.estimator, default_model.card, 5
    )
    assert newer.version != before
    deadline = time.monotonic() + 30
    while served_version(server) != newer.version:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)

    triton_answer = triton_grpc.run(server.grpc_address, "--infer", "FP64")["FP64"]

    async def kserve_version() -> str | None:
        client = InferenceGRPCClient(server.grpc_address)
        try:
            tensor = InferInput("input-0", [3, 4], "FP64")
            tensor.set_data_from_numpy(np.array(ROWS), binary_data=False)
            answer = await client.infer(
                InferRequest(model_name="iris", infer_inputs=[tensor])
            )
            version: str | None = answer.model_version
            return version
        finally:
            await client.close()

    assert triton_answer["model_version"] == newer.version
    assert asyncio.run(kserve_version()) == newer.version


def test_readiness_follows_the_model(
    start_predictor: Callable[..., PredictorProcess],
    tmp_path: Path,
    default_model: TrainedModel,
) -> None:
    root = tmp_path / "models"
    server = start_predictor(
        "--model_uri", str(root), "--reload_interval_seconds", "0.1", with_grpc=True
    )
    try:
        assert server.stub.ServerLive(pb.ServerLiveRequest()).live
        assert not server.stub.ServerReady(pb.ServerReadyRequest()).ready
        assert not server.stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
        with pytest.raises(grpc.RpcError) as not_ready:
            server.stub.ModelInfer(raw_request(ROWS))
        assert not_ready.value.code() == grpc.StatusCode.UNAVAILABLE

        open_store(str(root)).publish(default_model.estimator, default_model.card, 5)
        server.wait_until("/v1/models/iris", 200)

        assert server.stub.ServerReady(pb.ServerReadyRequest()).ready
        assert server.stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
        assert server.stub.ModelInfer(raw_request(ROWS)).model_version
    finally:
        assert server.stop() == 0


def test_sigterm_turns_grpc_readiness_false_and_still_serves_as_rest_does(
    start_predictor: Callable[..., PredictorProcess], store_root: Path
) -> None:
    server = start_predictor(
        "--model_uri", str(store_root), "--drain_seconds", "2", with_grpc=True
    )
    server.wait_until("/v1/models/iris", 200)
    assert server.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert server.stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready

    server.process.send_signal(signal.SIGTERM)

    server.wait_until("/v1/models/iris", 503, timeout=1)
    assert not server.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert not server.stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    # REST keeps answering inference while it drains; so does gRPC.
    assert server.predict([ROWS[2]]) == (200, {"predictions": [2]})
    answer = InferResponse.from_grpc(server.stub.ModelInfer(raw_request(ROWS)))
    assert answer.outputs[0].as_numpy().tolist() == [0, 1, 2]
    assert server.process.wait(timeout=30) == 0
