"""Thousands of generated requests on one kept-alive connection: random methods,
paths, headers and JSON shapes and numbers. None may get a 5xx or lose the
connection, and a good request is still answered afterwards.

The requests come from a seeded ``random.Random`` rather than hypothesis: drawing
5,000 examples through hypothesis took about 150 s of the test's time on its own.
The seed is printed (shown when the test fails); ``IRIS_FUZZ_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import json
import os
import random
import string
import struct
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

from tests.api.conftest import JSON, PredictorProcess

SEED = int(os.environ.get("IRIS_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
REQUESTS = 5000

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
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
PATH_PREFIXES = ["/", "/v1/models/", "/v2/models/", "/v2/models/iris/"]
SPECIAL_NUMBERS = [0, -0.0, 1e308, 5e-324, 6.8, 2.8, float("nan"), float("inf")]
DATATYPES = ["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "x"]
KNOWN_HEADERS = ["Content-Type", "Accept", "Inference-Header-Content-Length"]
HEADER_NAME_CHARACTERS = string.ascii_letters + string.digits
HEADER_VALUE_CHARACTERS = "".join(chr(code) for code in range(0x20, 0x7F))
# http.client sets these itself; a generated one would make the request unframed.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection", "expect"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.headers} {self.body!r:.200}"


class RequestMaker:
    """Random requests, shaped as clients get them wrong, from one seeded generator."""

    def __init__(self, seed: int) -> None:
        # A replayable fuzzer, not a secret: the seed is printed on purpose.
        self.random = random.Random(seed)  # noqa: S311

    def request(self) -> Request:
        method = self.random.choice(METHODS)
        body = None if method == "GET" else json.dumps(self.body()).encode()
        headers = {**(JSON if self.random.random() < 0.5 else {}), **self.headers()}
        for name in [name for name in headers if name.lower() in FRAMING_HEADERS]:
            del headers[name]
        return Request(method, self.path(), headers, body)

    def number(self) -> float | int:
        kind = self.random.randrange(5)
        if kind == 0:
            return self.random.choice(SPECIAL_NUMBERS)
        if kind == 1:
            return self.random.randint(-(10**30), 10**30)
        if kind == 2:
            return self.random.randint(-10, 10)
        if kind == 3:
            # Any 64 bits: subnormals, huge exponents, NaNs and infinities, either sign.
            bits = self.random.getrandbits(64).to_bytes(8, "little")
            return float(struct.unpack("<d", bits)[0])
        return self.random.uniform(-10, 10)

    def text(self, max_size: int) -> str:
        size = self.random.randint(0, max_size)
        if self.random.random() < 0.5:
            return "".join(chr(self.random.randrange(0x20, 0x7F)) for _ in range(size))
        return "".join(self.character() for _ in range(size))

    def character(self) -> str:
        while True:
            code = self.random.randrange(sys.maxunicode + 1)
            if not 0xD800 <= code <= 0xDFFF:
                return chr(code)

    def json_value(self, depth: int = 0) -> Any:
        kind = self.random.randrange(7 if depth < 3 else 4)
        if kind == 0:
            return self.random.choice([None, True, False])
        if kind in (1, 2):
            return self.number()
        if kind == 3:
            return self.text(10)
        if kind in (4, 5):
            return [
                self.json_value(depth + 1) for _ in range(self.random.randint(0, 5))
            ]
        return {
            self.text(10): self.json_value(depth + 1)
            for _ in range(self.random.randint(0, 5))
        }

    def rows(self) -> list[list[float | int]]:
        return [
            [self.number() for _ in range(self.random.randint(0, 6))]
            for _ in range(self.random.randint(0, 4))
        ]

    def body(self) -> Any:
        kind = self.random.randrange(4)
        if kind == 0:
            return self.json_value()
        if kind == 1:
            return {"instances": self.rows()}
        if kind == 2:
            return {"instances": self.json_value()}
        shape = [self.random.randint(-2, 8) for _ in range(self.random.randint(0, 3))]
        return {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": shape,
                    "datatype": self.random.choice(DATATYPES),
                    "data": self.rows(),
                }
            ]
        }

    def headers(self) -> dict[str, str]:
        headers = {}
        for _ in range(self.random.randint(0, 4)):
            if self.random.random() < 0.5:
                name = self.random.choice(KNOWN_HEADERS)
            else:
                size = self.random.randint(1, 20)
                name = "".join(self.random.choices(HEADER_NAME_CHARACTERS, k=size))
            size = self.random.randint(0, 40)
            headers[name] = "".join(
                self.random.choices(HEADER_VALUE_CHARACTERS, k=size)
            )
        return headers

    def path(self) -> str:
        if self.random.random() < 0.5:
            return self.random.choice(KNOWN_PATHS)
        tail = urllib.parse.quote(self.text(30), safe="/:")
        return self.random.choice(PATH_PREFIXES) + tail


def test_generated_requests_never_get_a_5xx_nor_lose_the_connection(
    predictor: PredictorProcess,
) -> None:
    print(f"fuzz seed={SEED} (replay with IRIS_FUZZ_SEED={SEED})")
    maker = RequestMaker(SEED)
    connection = predictor.connection()
    connection.connect()
    kept = connection.sock
    try:
        for number in range(REQUESTS):
            request = maker.request()
            context = f"request {number} of seed {SEED}: {request}"
            connection.request(
                request.method, request.path, body=request.body, headers=request.headers
            )
            response = connection.getresponse()
            response.read()
            assert response.status < 500, f"{response.status} for {context}"
            assert connection.sock is kept, f"connection lost after {context}"
            assert (response.getheader("connection") or "").lower() != "close", context
        assert predictor.predict([[6.8, 2.8, 4.8, 1.4]]) == (
            200,
            {"predictions": [1]},
        )
    finally:
        connection.close()
