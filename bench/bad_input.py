"""What malformed requests do to KServe's own request path, and to the predictor.

Sends every request of the test battery (tests/api/test_bad_input.py) to the
baseline (a plain kserve.Model, as KServe's sklearnserver) and to the predictor,
each followed by a good request on the same connection, and counts 5xx answers and
connections the server dropped.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections import Counter
from typing import Any

from bench.servers import running
from tests.api.conftest import JSON
from tests.api.test_bad_input import CASES, GOOD_ROW
from training.settings import TrainingSettings
from training.store import open_store
from training.train import train


def probe(port: int, method: str, path: str, headers: dict[str, str], body: Any) -> str:
    """The bad request's status, and what became of its kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    try:
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
        except (ConnectionError, http.client.HTTPException) as error:
            return f"no answer ({type(error).__name__})"
        try:
            good = json.dumps({"instances": [GOOD_ROW]})
            connection.request("POST", "/v1/models/iris:predict", good, JSON)
            after = connection.getresponse()
            after.read()
        except (ConnectionError, http.client.HTTPException):
            return f"{response.status}, connection lost"
        if after.status != 200:
            return f"{response.status}, then {after.status}"
        return str(response.status)
    finally:
        connection.close()


def outcome(result: str) -> str:
    if "connection lost" in result or "no answer" in result:
        return "connection lost"
    return f"{result[0]}xx"


def main() -> None:
    with tempfile.TemporaryDirectory() as models:
        trained = train(TrainingSettings())
        open_store(models).publish(trained.estimator, trained.card, 5)
        results: dict[str, dict[str, str]] = {}
        for name, module in (("kserve", "bench.baseline"), ("iris", "predictor")):
            with running(module, ["--model_uri", models]) as (port, _):
                # The unload request is last: it takes KServe's model away for good.
                for case in sorted(CASES, key=lambda case: "unload" in str(case.id)):
                    method, path, headers, body, _, _ = case.values
                    results.setdefault(str(case.id), {})[name] = probe(
                        port, method, path, headers, body
                    )
    print(f"{'request':<32} {'kserve baseline':<28} {'iris predictor':<16}")
    for case_id, result in results.items():
        print(f"{case_id:<32} {result['kserve']:<28} {result['iris']:<16}")
    for name in ("kserve", "iris"):
        outcomes = Counter(outcome(result[name]) for result in results.values())
        print(f"{name}: {dict(outcomes)} of {len(results)} bad requests")


if __name__ == "__main__":
    main()
