"""No client can break the predictor: every malformed request gets a 4xx naming the
problem, and the same kept-alive connection goes on answering correctly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import JSON, PredictorProcess, send

PREDICT = "/v1/models/iris:predict"
INFER = "/v2/models/iris/infer"
GOOD_ROW = [6.8, 2.8, 4.8, 1.4]
FEATURES = "sepal_length, sepal_width, petal_length, petal_width"
ROW_SHAPE = f"must be an array of 4 numbers or an object with {FEATURES}"
NAMED = {"sepal_length": 6.8, "sepal_width": 2.8, "petal_length": 4.8}


def v2(tensor: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", **tensor}],
        **extra,
    }


# A binary v2 request announcing 16 bytes of tensor data (four FP32 values).
BINARY_HEADER = json.dumps(v2({"parameters": {"binary_data_size": 16}})).encode()


def case(
    name: str,
    status: int,
    error: str,
    body: Any,
    *,
    path: str = PREDICT,
    method: str = "POST",
    headers: dict[str, str] = JSON,
) -> Any:
    """A bad request, the status it must get, and the whole error message."""
    return pytest.param(method, path, headers, body, status, error, id=name)


CASES = [
    case(
        "3 features",
        400,
        f"instances[0] has 3 values, expected 4: {FEATURES}",
        {"instances": [[6.8, 2.8, 4.8]]},
    ),
    case(
        "5 features",
        400,
        f"instances[0] has 5 values, expected 4: {FEATURES}",
        {"instances": [[*GOOD_ROW, 1.0]]},
    ),
    case(
        "string",
        400,
        "instances[0][0] must be a number, got a string",
        {"instances": [["a", 2.8, 4.8, 1.4]]},
    ),
    case(
        "numeric string",
        400,
        "instances[0][1] must be a number, got a string",
        {"instances": [[6.8, "2.8", 4.8, 1.4]]},
    ),
    case(
        "null",
        400,
        "instances[0][2] must be a number, got null",
        {"instances": [[6.8, 2.8, None, 1.4]]},
    ),
    case(
        "boolean",
        400,
        "instances[0][3] must be a number, got a boolean",
        {"instances": [[6.8, 2.8, 4.8, True]]},
    ),
    case(
        "ragged",
        400,
        f"instances[1] has 3 values, expected 4: {FEATURES}",
        {"instances": [GOOD_ROW, [6.8, 2.8, 4.8]]},
    ),
    case(
        "nested",
        400,
        "instances[0][0] is an array: a row is a flat array of 4 numbers",
        {"instances": [[GOOD_ROW]]},
    ),
    case(
        "object in a row",
        400,
        "instances[0][2] is an object: a row is a flat array of 4 numbers",
        {"instances": [[6.8, 2.8, {}, 1.4]]},
    ),
    case(
        "row is a number",
        400,
        f"instances[0] {ROW_SHAPE}, got a number",
        {"instances": [6.8, 2.8, 4.8, 1.4]},
    ),
    case(
        "empty instances",
        400,
        '"instances" is empty: send at least one row',
        {"instances": []},
    ),
    case(
        "missing instances",
        400,
        'missing "instances": send rows such as {"instances":[[4.4,3.0,1.3,0.2]]}',
        {"inputs": [GOOD_ROW]},
    ),
    case(
        "instances a string",
        400,
        '"instances" must be an array of rows, got a string',
        {"instances": "6.8,2.8,4.8,1.4"},
    ),
    case(
        "instances an object",
        400,
        '"instances" must be an array of rows, got an object',
        {"instances": {"a": GOOD_ROW}},
    ),
    case(
        "negative",
        400,
        "instances[0][1] = -2.8 is outside sepal_width's accepted range 0.8 to 5.6 cm",
        {"instances": [[6.8, -2.8, 4.8, 1.4]]},
    ),
    case(
        "too large",
        400,
        "instances[0][2] = 1e+300 is outside petal_length's accepted range -1.8 to 9.8 "
        "cm",
        {"instances": [[6.8, 2.8, 1e300, 1.4]]},
    ),
    case(
        "NaN",
        400,
        "Unrecognized request format: unexpected character, expected a JSON value: "
        "line 1 column 17 (char 16)",
        '{"instances": [[NaN, 2.8, 4.8, 1.4]]}',
    ),
    case(
        "Infinity",
        400,
        "Unrecognized request format: number is infinity when parsed as double: "
        "line 1 column 32 (char 31)",
        '{"instances": [[6.8, 2.8, 4.8, 1e999]]}',
    ),
    case(
        "top-level array",
        400,
        'the body must be a JSON object such as {"instances":[[4.4,3.0,1.3,0.2]]}, '
        "got an array",
        [GOOD_ROW],
    ),
    case(
        "top-level null",
        400,
        'the body must be a JSON object such as {"instances":[[4.4,3.0,1.3,0.2]]}, '
        "got null",
        "null",
    ),
    case(
        "not JSON",
        400,
        "Unrecognized request format: unexpected end of data: "
        "line 1 column 20 (char 19)",
        '{"instances": [[6.8',
    ),
    case(
        "empty body",
        400,
        "Unrecognized request format: Input is a zero-length, empty document: "
        "line 1 column 1 (char 0)",
        "",
    ),
    case(
        "not UTF-8",
        400,
        "Unrecognized request format: str is not valid UTF-8: surrogates not allowed: "
        "line 1 column 1 (char 0)",
        b'{"instances": [["\xff"]]}',
    ),
    case(
        "unknown field",
        400,
        'unknown field "signature": a v1 request has "instances" and optionally '
        '"parameters"',
        {"instances": [GOOD_ROW], "signature": 1},
    ),
    case(
        "parameters an array",
        400,
        '"parameters" must be an object, got an array',
        {"instances": [GOOD_ROW], "parameters": []},
    ),
    case(
        "unknown parameter",
        400,
        'unknown parameter "explain": the only parameter is "probabilities"',
        {"instances": [GOOD_ROW], "parameters": {"explain": True}},
    ),
    case(
        "probabilities not a boolean",
        400,
        '"parameters.probabilities" must be true or false, got a string',
        {"instances": [GOOD_ROW], "parameters": {"probabilities": "yes"}},
    ),
    case(
        "named row missing a feature",
        400,
        f"instances[0] is missing petal_width: expected {FEATURES}",
        {"instances": [NAMED]},
    ),
    case(
        "named row with a typo",
        400,
        f'instances[0] has an unknown feature "petal_widht": expected {FEATURES}',
        {"instances": [{**NAMED, "petal_widht": 1.4}]},
    ),
    case(
        "named row with a string",
        400,
        "instances[0].petal_width must be a number, got a string",
        {"instances": [{**NAMED, "petal_width": "1.4"}]},
    ),
    case(
        "too many rows",
        400,
        '"instances" has 10001 rows, more than the limit of 10000',
        {"instances": [GOOD_ROW] * 10_001},
    ),
    case(
        "text/plain",
        415,
        "Content-Type must be application/json, got text/plain",
        {"instances": [GOOD_ROW]},
        headers={"Content-Type": "text/plain"},
    ),
    case(
        "form",
        415,
        "Content-Type must be application/json, got application/x-www-form-urlencoded",
        {"instances": [GOOD_ROW]},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    case(
        "no Content-Type",
        415,
        "Content-Type must be application/json, got none",
        {"instances": [GOOD_ROW]},
        headers={},
    ),
    case(
        "wrong model",
        404,
        "Model with name setosa does not exist.",
        {"instances": [GOOD_ROW]},
        path="/v1/models/setosa:predict",
    ),
    case("GET predict", 405, "use POST for :predict", None, method="GET", headers={}),
    case(
        "PUT predict",
        405,
        "Method Not Allowed",
        {"instances": [GOOD_ROW]},
        method="PUT",
    ),
    case(
        "DELETE model",
        405,
        "Method Not Allowed",
        None,
        path="/v1/models/iris",
        method="DELETE",
        headers={},
    ),
    case(
        "unknown verb",
        405,
        "Method Not Allowed",
        {"instances": [GOOD_ROW]},
        path="/v1/models/iris:classify",
    ),
    case(
        "explain",
        404,
        "model iris has no explainer",
        {"instances": [GOOD_ROW]},
        path="/v1/models/iris:explain",
    ),
    case(
        "unknown path",
        404,
        "Not Found",
        None,
        path="/v1/iris",
        method="GET",
        headers={},
    ),
    case(
        "repository unload",
        403,
        "the model repository API is disabled on this server",
        {},
        path="/v2/repository/models/iris/unload",
    ),
    case(
        "v2 INT32",
        400,
        'input "x" has datatype INT32, expected FP32 or FP64',
        v2({"datatype": "INT32", "data": [7, 3, 5, 1]}),
        path=INFER,
    ),
    case(
        "v2 BYTES",
        400,
        'input "x" has datatype BYTES, expected FP32 or FP64',
        v2({"datatype": "BYTES", "data": ["a"]}),
        path=INFER,
    ),
    case(
        "v2 3 columns",
        400,
        'input "x" has shape [1, 3], expected [N, 4] with N >= 1',
        v2({"shape": [1, 3], "data": [6.8, 2.8, 4.8]}),
        path=INFER,
    ),
    case(
        "v2 1-d shape",
        400,
        'input "x" has shape [4], expected [N, 4] with N >= 1',
        v2({"shape": [4], "data": GOOD_ROW}),
        path=INFER,
    ),
    case(
        "v2 shape and data disagree",
        400,
        'input "x" has 8 values, its shape needs 4',
        v2({"data": [*GOOD_ROW, *GOOD_ROW]}),
        path=INFER,
    ),
    case(
        "v2 string value",
        400,
        'input "x" value 1 must be a number, got a string',
        v2({"data": [6.8, "2.8", 4.8, 1.4]}),
        path=INFER,
    ),
    case(
        "v2 out of range",
        400,
        'input "x" row 0 column 3 = 1e+30 is outside petal_width\'s accepted '
        "range -1.1 to 3.7 cm",
        v2({"data": [6.8, 2.8, 4.8, 1e30]}),
        path=INFER,
    ),
    case(
        "v2 two inputs",
        400,
        "expected exactly one input tensor of shape [N, 4], got 2",
        {"inputs": [v2({"data": GOOD_ROW})["inputs"][0]] * 2},
        path=INFER,
    ),
    case(
        "v2 no inputs",
        400,
        "invalid request: inputs: Field required",
        {"outputs": []},
        path=INFER,
    ),
    case(
        "v2 shape of strings",
        400,
        "invalid request: inputs.0.shape.0: Input should be a valid integer, "
        "unable to parse string as an integer",
        v2({"shape": ["a", 4], "data": GOOD_ROW}),
        path=INFER,
    ),
    case(
        "v2 unknown output",
        400,
        'unknown output "logits": this model has outputs predict, probabilities',
        v2({"data": GOOD_ROW}, outputs=[{"name": "logits"}]),
        path=INFER,
    ),
    case(
        "v2 wrong model",
        404,
        "Model with name setosa does not exist.",
        v2({"data": GOOD_ROW}),
        path="/v2/models/setosa/infer",
    ),
    case(
        "v2 model version",
        404,
        "model versions are not addressable: use /v2/models/iris/infer",
        v2({"data": GOOD_ROW}),
        path="/v2/models/iris/versions/1/infer",
    ),
    case(
        "v2 binary without its header",
        400,
        "received byte inputs, but the'inference-header-content-length' header "
        "is missing.",
        b"\x00" * 16,
        path=INFER,
        headers={"Content-Type": "application/octet-stream"},
    ),
    case(
        "v2 binary with a bad header",
        400,
        "malformed request body: ValueError: "
        "invalid literal for int() with base 10: 'lots'",
        b"\x00" * 16,
        path=INFER,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": "lots",
        },
    ),
    case(
        "v2 binary without inputs",
        400,
        "malformed request body: KeyError: 'inputs'",
        b"{}",
        path=INFER,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": "2",
        },
    ),
    case(
        "v2 binary too short",
        400,
        "malformed request body: ValueError: "
        "cannot reshape array of size 2 into shape (1,4)",
        BINARY_HEADER + b"\x00" * 8,
        path=INFER,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(BINARY_HEADER)),
        },
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "error"),
    CASES,
)
def test_a_bad_request_gets_a_4xx_naming_the_problem(
    predictor: PredictorProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    error: str,
) -> None:
    connection = predictor.connection()
    try:
        assert send(connection, method, path, body, headers) == (
            status,
            {"error": error},
        )
        # The same kept-alive connection still answers correctly.
        assert send(connection, "POST", PREDICT, {"instances": [GOOD_ROW]}, JSON) == (
            200,
            {"predictions": [1]},
        )
    finally:
        connection.close()


def test_bad_requests_back_to_back_on_one_connection_never_cause_a_5xx(
    predictor: PredictorProcess,
) -> None:
    # Readiness polls while the shared server loaded its model may have counted a
    # 503; what matters is that none of these requests adds a 5xx.
    before = server_errors(predictor)
    connection = predictor.connection()
    try:
        for bad in CASES:
            method, path, headers, body, status, _ = bad.values
            assert send(connection, method, path, body, headers)[0] == status, bad.id
        assert send(connection, "POST", PREDICT, {"instances": [GOOD_ROW]}, JSON) == (
            200,
            {"predictions": [1]},
        )
    finally:
        connection.close()
    assert (
        predictor.metric(
            "iris_http_requests_total", route="/v1/models/{model}:predict", code="200"
        )
        > 0
    )
    assert server_errors(predictor) == before


def server_errors(predictor: PredictorProcess) -> dict[str, float]:
    """Every route's count of 5xx answers, from the server's own counter."""
    families = text_string_to_metric_families(predictor.request("GET", "/metrics")[1])
    return {
        f"{sample.labels['route']} {sample.labels['code']}": sample.value
        for family in families
        if family.name == "iris_http_requests"
        for sample in family.samples
        if sample.name == "iris_http_requests_total"
        and sample.labels["code"].startswith("5")
    }
