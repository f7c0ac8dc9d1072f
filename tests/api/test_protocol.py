"""The v1 and v2 protocols, spoken to a real predictor process over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from tests.api.conftest import JSON, PredictorProcess
from training.train import TrainedModel

# KServe's sklearn-iris example request, and the classes it answers.
KSERVE_EXAMPLE = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
SETOSA, VERSICOLOR, VIRGINICA = (
    [5.1, 3.5, 1.4, 0.2],
    [6.5, 2.8, 4.6, 1.5],
    [7.6, 3.0, 6.6, 2.2],
)


def test_the_kserve_sklearn_iris_example_gives_its_answer(
    predictor: PredictorProcess,
) -> None:
    assert predictor.predict(KSERVE_EXAMPLE) == (200, {"predictions": [1, 1]})


def test_rows_may_name_their_features(predictor: PredictorProcess) -> None:
    named = [
        dict(
            zip(
                ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                row,
                strict=True,
            )
        )
        for row in KSERVE_EXAMPLE
    ]

    assert predictor.predict(named) == (200, {"predictions": [1, 1]})
    assert predictor.predict([named[0], KSERVE_EXAMPLE[1]]) == (
        200,
        {"predictions": [1, 1]},
    )


def test_probabilities_give_label_confidence_and_every_class(
    predictor: PredictorProcess, default_model: TrainedModel
) -> None:
    status, body = predictor.request(
        "POST",
        "/v1/models/iris:predict",
        {
            "instances": [SETOSA, VERSICOLOR, VIRGINICA],
            "parameters": {"probabilities": True},
        },
        JSON,
    )

    assert status == 200
    setosa, versicolor, virginica = body["predictions"]
    assert (setosa["class_id"], setosa["label"]) == (0, "setosa")
    assert setosa["confidence"] == pytest.approx(1.0, abs=0.02)
    assert (versicolor["class_id"], versicolor["label"]) == (1, "versicolor")
    assert (virginica["class_id"], virginica["label"]) == (2, "virginica")
    expected = default_model.estimator.predict_proba(
        np.array([SETOSA, VERSICOLOR, VIRGINICA])
    )
    for row, probabilities in zip(body["predictions"], expected.tolist(), strict=True):
        assert list(row["probabilities"]) == ["setosa", "versicolor", "virginica"]
        assert list(row["probabilities"].values()) == probabilities
        assert row["confidence"] == max(probabilities)


def test_v2_infer_takes_fp32_and_fp64_tensors(
    predictor: PredictorProcess, default_model: TrainedModel
) -> None:
    for datatype in ("FP32", "FP64"):
        status, body = predictor.request(
            "POST",
            "/v2/models/iris/infer",
            {
                "id": "request-1",
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [2, 4],
                        "datatype": datatype,
                        "data": [value for row in KSERVE_EXAMPLE for value in row],
                    }
                ],
                "outputs": [{"name": "predict"}, {"name": "probabilities"}],
            },
            JSON,
        )

        assert status == 200, body
        assert body["id"] == "request-1"
        assert body["model_name"] == "iris"
        predict, probabilities = body["outputs"]
        assert predict == {
            "name": "predict",
            "shape": [2],
            "datatype": "INT64",
            "parameters": None,
            "data": [1, 1],
        }
        assert probabilities["shape"] == [2, 3]
        expected = default_model.estimator.predict_proba(
            np.array(KSERVE_EXAMPLE, dtype=np.float32 if datatype == "FP32" else None)
        )
        assert probabilities["data"] == expected.ravel().tolist()


def test_v2_metadata_describes_the_tensors(predictor: PredictorProcess) -> None:
    status, body = predictor.request("GET", "/v2/models/iris")

    assert status == 200
    assert body["name"] == "iris"
    assert body["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert [output["name"] for output in body["outputs"]] == [
        "predict",
        "probabilities",
    ]


def test_model_metadata_is_readable_over_http(
    predictor: PredictorProcess, default_model: TrainedModel
) -> None:
    status, body = predictor.request("GET", "/v1/models/iris/metadata")

    assert status == 200
    assert body["name"] == "iris"
    assert body["ready"] is True
    assert len(body["version"]) == 29
    assert body["created_at"]
    assert body["class_names"] == ["setosa", "versicolor", "virginica"]
    assert body["metrics"]["accuracy"] == default_model.card.metrics.accuracy
    assert body["algorithm"] == "random_forest"


@pytest.mark.parametrize(
    "path", ["/v1/models/iris", "/v2/health/ready", "/v2/models/iris/ready"]
)
def test_readiness_endpoints_say_ready_with_a_model(
    predictor: PredictorProcess, path: str
) -> None:
    status, body = predictor.request("GET", path)

    assert status == 200
    assert body["ready"] is True


@pytest.mark.parametrize(
    ("path", "body"),
    [("/", {"status": "alive"}), ("/v2/health/live", {"live": True})],
)
def test_liveness(predictor: PredictorProcess, path: str, body: dict[str, Any]) -> None:
    assert predictor.request("GET", path) == (200, body)


def test_kserves_own_client_speaks_v1_and_v2(predictor: PredictorProcess) -> None:
    base = f"http://127.0.0.1:{predictor.port}"

    async def talk() -> tuple[Any, list[InferResponse], bool, bool]:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            v1_answer = await v1.infer(
                base, {"instances": KSERVE_EXAMPLE}, model_name="iris"
            )
            v2_answers = []
            # binary_data=True is the client's default: the binary tensor extension.
            for binary in (False, True):
                tensor = InferInput("input-0", [2, 4], "FP32")
                tensor.set_data_from_numpy(
                    np.array(KSERVE_EXAMPLE, dtype=np.float32), binary_data=binary
                )
                request = InferRequest(model_name="iris", infer_inputs=[tensor])
                v2_answers.append(await v2.infer(base, request, model_name="iris"))
            return (
                v1_answer,
                v2_answers,
                await v1.is_model_ready(base, "iris"),
                await v2.is_server_ready(base),
            )
        finally:
            await v1.close()
            await v2.close()

    v1_answer, v2_answers, v1_ready, v2_ready = asyncio.run(talk())

    assert v1_answer == {"predictions": [1, 1]}
    for answer in v2_answers:
        assert answer.outputs[0].as_numpy().tolist() == [1, 1]
    assert v1_ready is True
    assert v2_ready is True
