"""Bodies over the limit are refused with 413 before they are parsed."""

from __future__ import annotations

from collections.abc import Iterator

from tests.api.conftest import JSON, PredictorProcess, send

PREDICT = "/v1/models/iris:predict"
ROW = b"[6.8, 2.8, 4.8, 1.4],"
LIMIT = 1024 * 1024
TOO_LARGE = {"error": f"request body is larger than the limit of {LIMIT} bytes"}


def test_a_body_over_the_limit_is_refused_by_its_content_length(
    predictor: PredictorProcess,
) -> None:
    body = b'{"instances": [' + ROW * (LIMIT // len(ROW)) + b"[1, 1, 1, 1]]}"
    connection = predictor.connection()
    try:
        assert send(connection, "POST", PREDICT, body, JSON) == (413, TOO_LARGE)
        assert (
            send(
                connection, "POST", PREDICT, {"instances": [[6.8, 2.8, 4.8, 1.4]]}, JSON
            )[0]
            == 200
        )
    finally:
        connection.close()


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    predictor: PredictorProcess,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        # Twice the limit: the server must stop reading long before the end.
        for _ in range(2 * LIMIT // len(ROW)):
            yield ROW
        yield b"[1, 1, 1, 1]]}"

    connection = predictor.connection()
    try:
        connection.request(
            "POST", PREDICT, body=chunks(), headers=JSON, encode_chunked=True
        )
        response = connection.getresponse()
        assert response.status == 413
        assert (
            response.read()
            == b'{"error":"request body is larger than the limit of 1048576 bytes"}'
        )
    except (BrokenPipeError, ConnectionResetError):
        # The server may close the socket while the client is still sending; then
        # the refusal must still be what a fresh look at the metrics shows.
        assert (
            predictor.metric(
                "iris_http_requests_total",
                route="/v1/models/{model}:predict",
                code="413",
            )
            > 0
        )
    finally:
        connection.close()
    assert predictor.predict([[6.8, 2.8, 4.8, 1.4]]) == (200, {"predictions": [1]})


def test_a_body_just_under_the_limit_is_read(predictor: PredictorProcess) -> None:
    rows = (LIMIT - 100) // len(ROW)
    body = b'{"instances": [' + ROW * (rows - 1) + b"[6.8, 2.8, 4.8, 1.4]]}"
    assert len(body) < LIMIT

    status, answer = predictor.request("POST", PREDICT, body, JSON)

    assert status == 400  # over the 10000-row limit, but read and parsed, not 413
    assert answer == {
        "error": f'"instances" has {rows} rows, more than the limit of 10000'
    }
