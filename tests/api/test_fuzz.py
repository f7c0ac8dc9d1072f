"""Thousands of generated requests on one kept-alive connection: random methods,
paths, headers and JSON shapes and numbers. None may get a 5xx or lose the
connection, and a good request is still answered afterwards.

The seed is printed (shown when the test fails); ``IRIS_FUZZ_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import json
import os
import random
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.api.conftest import JSON, PredictorProcess

SEED = int(os.environ.get("IRIS_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
EXAMPLES = 5000

METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
KNOWN_PATHS = [
    "/",
    "/metrics",
    "/v1/models/iris",
    "/v1/models/iris:predict",
    "/v1/models/iris:explain",
    "/v1/models/iris/metadata",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/iris",
    "/v2/models/iris/ready",
    "/v2/models/iris/infer",
    "/v2/models/iris/versions/1/infer",
    "/v2/repository/index",
]
PATHS = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.builds(
        lambda base, tail: base + urllib.parse.quote(tail, safe="/:"),
        st.sampled_from(["/", "/v1/models/", "/v2/models/", "/v2/models/iris/"]),
        st.text(max_size=30),
    ),
)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -0.0, 1e308, 5e-324, 6.8, 2.8]),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=20,
)
ROWS = st.lists(st.lists(NUMBERS, min_size=0, max_size=6), max_size=4)
BODIES = st.one_of(
    JSON_VALUES,
    st.builds(lambda rows: {"instances": rows}, ROWS),
    st.builds(lambda value: {"instances": value}, JSON_VALUES),
    st.builds(
        lambda rows, shape, datatype: {
            "inputs": [
                {"name": "input-0", "shape": shape, "datatype": datatype, "data": rows}
            ]
        },
        ROWS,
        st.lists(st.integers(min_value=-2, max_value=8), max_size=3),
        st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "x"]),
    ),
)
HEADER_NAMES = st.text(
    st.characters(whitelist_categories=["Ll", "Lu", "Nd"], max_codepoint=127),
    min_size=1,
    max_size=20,
)
HEADER_VALUES = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
)
HEADERS = st.dictionaries(
    st.one_of(
        st.sampled_from(["Content-Type", "Accept", "Inference-Header-Content-Length"]),
        HEADER_NAMES,
    ),
    HEADER_VALUES,
    max_size=4,
)


def test_generated_requests_never_get_a_5xx_nor_lose_the_connection(
    predictor: PredictorProcess,
) -> None:
    print(f"fuzz seed={SEED} (replay with IRIS_FUZZ_SEED={SEED})")
    connection = predictor.connection()
    connection.connect()
    kept = connection.sock

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        method=METHODS,
        path=PATHS,
        headers=HEADERS,
        body=BODIES,
        as_json=st.booleans(),
    )
    def one_request(
        method: str, path: str, headers: dict[str, str], body: Any, as_json: bool
    ) -> None:
        data = json.dumps(body).encode() if method != "GET" else None
        sent = {**(JSON if as_json else {}), **headers}
        sent.pop("Content-Length", None)
        sent.pop("Transfer-Encoding", None)
        sent.pop("Connection", None)
        sent.pop("Expect", None)
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        response.read()
        context = f"{method} {path} {sent} {data!r:.200}"
        assert response.status < 500, f"{response.status} for {context}"
        assert connection.sock is kept, f"connection lost after {context}"
        assert (response.getheader("connection") or "").lower() != "close", context

    try:
        one_request()
        assert predictor.predict([[6.8, 2.8, 4.8, 1.4]]) == (
            200,
            {"predictions": [1]},
        )
    finally:
        connection.close()
