"""The route table (``predictor.routes``): every path the server answers is in it,
and each is counted under exactly the metric route label the table gives it."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from fastapi import FastAPI
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import BaseRoute

from predictor.internals import require_routes_first
from predictor.model import IrisModel
from predictor.routes import (
    ENDPOINTS,
    OTHER,
    OWN_ENDPOINTS,
    ROUTE_LABELS,
    Endpoint,
    ServerState,
    install_routes,
    label_of,
)
from tests.api.conftest import JSON, PredictorProcess

GOOD_BODY = b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'


def _paths(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(path, method) of every route, those of included routers too."""
    found = set()
    for route in routes:
        # FastAPI keeps an included router's routes on it (KServe's have no prefix).
        included = getattr(route, "original_router", None)
        if included is not None:
            found |= _paths(included.routes)
        elif hasattr(route, "path"):
            for method in getattr(route, "methods", None) or ():
                found.add((route.path, method))
    return found


@pytest.fixture(scope="module")
def kserve_app() -> tuple[FastAPI, list[BaseRoute]]:
    """KServe's app as the server builds it: our routes first, then KServe's."""
    # As kserve.model_server builds it, without --enable_docs_url.
    app = FastAPI(docs_url=None, redoc_url=None)
    ours = install_routes(app, IrisModel("iris", max_rows=10), ServerState())
    repository = ModelRepository()
    RESTServer(
        "unused:app",
        DataPlane(repository),
        ModelRepositoryExtension(repository),
        http_port=0,
    )._register_endpoints(app)
    return app, ours


def test_every_route_of_the_app_is_in_the_table(
    kserve_app: tuple[FastAPI, list[BaseRoute]],
) -> None:
    app, _ = kserve_app
    table = {
        (endpoint.path, method) for endpoint in ENDPOINTS for method in endpoint.methods
    }
    # FastAPI's own schema route is not listed, nor are KServe's versioned and
    # repository routes: two catch-all routes of ours answer those paths first.
    served = {
        (path, method)
        for path, method in _paths(app.router.routes)
        if path != "/openapi.json"
        and "/versions/" not in path
        and not path.startswith("/v2/repository/")
    }
    assert served - table == set()
    # Every endpoint of the table is served, for each of its methods but HEAD,
    # which the guard answers as GET.
    listed = {(path, method) for path, method in table if method != "HEAD"}
    assert listed - _paths(app.router.routes) == set()


def test_our_routes_come_from_the_table_and_are_matched_first(
    kserve_app: tuple[FastAPI, list[BaseRoute]],
) -> None:
    app, ours = kserve_app
    assert [getattr(route, "path", None) for route in ours] == [
        endpoint.path for endpoint in OWN_ENDPOINTS
    ]
    require_routes_first(app, ours)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda each: each.path)
def test_each_path_has_exactly_one_route_label(endpoint: Endpoint) -> None:
    example = endpoint.example
    matching = [label for label in ROUTE_LABELS if re.fullmatch(label.pattern, example)]
    assert len(matching) <= 1, matching
    assert label_of(example) is (matching[0] if matching else OTHER)
    assert label_of(example) is endpoint.label


def requests_by_route(server: PredictorProcess) -> Counter[str]:
    status, text = server.request("GET", "/metrics")
    assert status == 200
    counted: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "iris_http_requests":
            for sample in family.samples:
                if sample.name == "iris_http_requests_total":
                    counted[sample.labels["route"]] += int(sample.value)
    return counted


def test_the_server_counts_each_path_under_its_label_from_the_table(
    predictor: PredictorProcess,
) -> None:
    for endpoint in ENDPOINTS:
        for method in endpoint.methods:
            before = requests_by_route(predictor)
            body = GOOD_BODY if method == "POST" else None
            connection = predictor.connection()
            try:
                connection.request(method, endpoint.example, body, JSON)
                response = connection.getresponse()
                response.read()
            finally:
                connection.close()
            assert response.status < 500, (method, endpoint.example)
            after = requests_by_route(predictor)
            # The scrape that read `before` is counted after it answered.
            expected = Counter([endpoint.label.name, "/metrics"])
            assert after - before == expected, (method, endpoint.example)
