"""The predictor's metrics appear on /metrics with the right names and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import JSON

SETOSA, VERSICOLOR, VIRGINICA = (
    [5.1, 3.5, 1.4, 0.2],
    [6.5, 2.8, 4.6, 1.5],
    [7.6, 3.0, 6.6, 2.2],
)


def test_metrics_count_what_was_asked_and_answered(
    start_predictor: Any, published_default: Path
) -> None:
    server = start_predictor("--model_uri", str(published_default))
    server.wait_until("/v1/models/iris", 200)

    assert server.predict([SETOSA, SETOSA, VERSICOLOR, VIRGINICA])[0] == 200
    assert server.predict([[6.8, 2.8, 4.8]])[0] == 400
    assert (
        server.request(
            "POST",
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": SETOSA}
                ]
            },
            JSON,
        )[0]
        == 200
    )

    def metric(name: str, **labels: str) -> float:
        value: float = server.metric(name, **labels)
        return value

    assert (
        metric("iris_predictions_total", model_name="iris", **{"class": "setosa"}) == 3
    )
    assert (
        metric("iris_predictions_total", model_name="iris", **{"class": "versicolor"})
        == 1
    )
    assert (
        metric("iris_predictions_total", model_name="iris", **{"class": "virginica"})
        == 1
    )
    assert metric("iris_prediction_confidence_ratio_count", model_name="iris") == 5
    assert (
        metric("iris_prediction_confidence_ratio_bucket", model_name="iris", le="+Inf")
        == 5
    )
    # Petal lengths asked about: 1.4 (three setosas), 4.6 and 6.6; the buckets cut
    # the training range, 1.1 to 6.9 cm, in eight.
    assert (
        metric(
            "iris_feature_value_centimeters_bucket",
            model_name="iris",
            feature="petal_length",
            le="1.825",
        )
        == 3
    )
    assert (
        metric(
            "iris_feature_value_centimeters_bucket",
            model_name="iris",
            feature="petal_length",
            le="4.725",
        )
        == 4
    )
    assert metric(
        "iris_feature_value_centimeters_sum",
        model_name="iris",
        feature="petal_length",
    ) == pytest.approx(1.4 * 3 + 4.6 + 6.6)
    assert metric("iris_model_ready", model_name="iris") == 1
    assert metric("iris_model_reloads_total", model_name="iris", result="success") == 1
    assert metric("iris_model_trained_timestamp_seconds", model_name="iris") > 1.7e9
    assert (
        metric(
            "iris_model_training_feature_mean_centimeters",
            model_name="iris",
            feature="petal_length",
        )
        > 0
    )
    # KServe's own latency histograms, per model.
    assert metric("request_predict_seconds_count", model_name="iris") == 2
    assert metric("request_preprocess_seconds_count", model_name="iris") == 3
    # Every request by route and status, for the error-ratio alert.
    route = "/v1/models/{model}:predict"
    assert metric("iris_http_requests_total", route=route, code="200") == 1
    assert metric("iris_http_requests_total", route=route, code="400") == 1
    assert metric("iris_http_request_duration_seconds_count", route=route) == 2
    text = server.request("GET", "/metrics")[1]
    assert (
        'iris_model_info{algorithm="random_forest",evaluator="grid",model_name="iris",'
        'version="' in text
    )
    assert "_created" not in text
