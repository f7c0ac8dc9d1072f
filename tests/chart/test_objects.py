"""Every rendered object is valid: against the Kubernetes API schemas of the oldest and
newest supported versions, as a typed Kubernetes object, and for the
prometheus-operator's kinds against its models. Each check refuses unknown fields."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes.client
import kubernetes_validate
import pydantic
import pytest
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

from tests.chart.render import (
    MODES,
    NEWEST_KUBERNETES,
    OLDEST_KUBERNETES,
    REPO,
    Manifest,
)

OPERATOR_KINDS: dict[str, type[pydantic.BaseModel]] = {
    "ServiceMonitor": prometheus_operator.ServiceMonitor,
    "PrometheusRule": prometheus_operator.PrometheusRule,
}
# The v1 schema of the Gateway API's standard HTTPRoute CRD (release v1.6.1,
# config/crd/standard/gateway.networking.k8s.io_httproutes.yaml), descriptions cut.
HTTP_ROUTE_SCHEMA = REPO / "tests/chart/schemas/httproute-v1-gateway-api-v1.6.1.json"
CUSTOM_KINDS = {*OPERATOR_KINDS, "HTTPRoute"}


def unique_objects(kube_version: str) -> list[Manifest]:
    """Each distinct object of every mode once: modes share most of their objects."""
    seen: dict[str, Manifest] = {}
    for mode in MODES.values():
        for each in mode.render(kube_version):
            seen.setdefault(json.dumps(each, sort_keys=True), each)
    return list(seen.values())


def label(each: Manifest) -> str:
    return f"{each['kind']}/{each['metadata']['name']}"


@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_every_object_meets_the_kubernetes_api_schema(kube_version: str) -> None:
    checked = 0
    for each in unique_objects(kube_version):
        try:
            kubernetes_validate.validate(each, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert each["kind"] in CUSTOM_KINDS, f"no schema for {label(each)}"
            continue
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{label(each)} is invalid in {kube_version}: {error.message}")
        checked += 1
    assert checked >= 25


def typed(each: Manifest) -> pydantic.BaseModel:
    """The kubernetes client's model of an object: autoscaling/v2 HPA is
    V2HorizontalPodAutoscaler."""
    version = each["apiVersion"].rpartition("/")[2]
    model: type[pydantic.BaseModel] = getattr(
        kubernetes.client, f"{version.capitalize()}{each['kind']}"
    )
    return model.model_validate(each)


def test_every_builtin_object_round_trips_through_its_typed_model() -> None:
    for each in unique_objects(NEWEST_KUBERNETES):
        if each["kind"] in CUSTOM_KINDS:
            continue
        dumped = typed(each).model_dump(mode="json", by_alias=True, exclude_none=True)
        assert dumped == each, f"{label(each)} does not round-trip"


def operator_object(each: Manifest) -> dict[str, Any]:
    """A ServiceMonitor or PrometheusRule through the operator's model and back. The
    models drop fields they do not know, so a round trip that changes the object
    shows a field the operator would ignore."""
    model = OPERATOR_KINDS[each["kind"]].model_validate(each)
    dumped: dict[str, Any] = model.model_dump(
        mode="json", by_alias=True, exclude_unset=True
    )
    return dumped


def test_service_monitors_and_rules_meet_the_prometheus_operator_models() -> None:
    checked = 0
    for each in unique_objects(NEWEST_KUBERNETES):
        if each["kind"] in OPERATOR_KINDS:
            assert operator_object(each) == each, f"{label(each)} has unknown fields"
            checked += 1
    assert checked >= 2


def test_an_unknown_operator_field_is_caught() -> None:
    monitor = copy.deepcopy(MODES["monitoring-on"].render().get("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["prot"] = "http"
    assert operator_object(monitor) != monitor
    rule = copy.deepcopy(MODES["monitoring-on"].render().get("PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["expression"] = "up"
    assert operator_object(rule) != rule


def closed(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as the API server's strict field
    validation does (a structural schema only prunes them)."""
    if isinstance(schema, list):
        return [closed(each) for each in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: closed(value) for key, value in schema.items()}
    if "properties" in tightened and "additionalProperties" not in tightened:
        tightened["additionalProperties"] = False
    return tightened


def http_route_errors(route: Manifest) -> list[str]:
    schema = closed(json.loads(HTTP_ROUTE_SCHEMA.read_text()))
    schema["properties"]["metadata"] = {"type": "object"}
    validator = jsonschema.Draft4Validator(schema)
    return [error.message for error in validator.iter_errors(route)]


def test_every_http_route_meets_the_gateway_api_v1_schema() -> None:
    routes = [
        each
        for each in unique_objects(NEWEST_KUBERNETES)
        if each["kind"] == "HTTPRoute"
    ]
    assert routes
    for route in routes:
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert http_route_errors(route) == [], label(route)


def test_an_http_route_the_gateway_api_refuses_is_caught() -> None:
    route = copy.deepcopy(MODES["extension-points"].render().get("HTTPRoute"))
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = "http"
    route["spec"]["parentRef"] = route["spec"].pop("parentRefs")
    errors = http_route_errors(route)
    assert any("'http' is not of type 'integer'" in error for error in errors)
    assert any("'parentRef' was unexpected" in error for error in errors)
