"""gRPC in the chart: off by default; on, a named container port the predictor
listens on, a Service port with appProtocol grpc, and the network policy open to it."""

from __future__ import annotations

import pytest

from predictor.settings import parse_settings as parse_predictor
from tests.chart.pods import describe, service_ports
from tests.chart.render import RELEASE, HelmError, Manifests, lint, render

GRPC_ON = {"grpc": {"enabled": True, "containerPort": 9000, "servicePort": 9001}}


def predictor_ports(manifests: Manifests) -> tuple[dict[str, int], bool, int]:
    """The container's named ports, and whether and where the predictor serves gRPC."""
    container = describe(manifests.get("Deployment", RELEASE), manifests).container(
        "predictor"
    )
    _, arguments = parse_predictor(list(container.argv[3:]))
    return dict(container.ports), arguments.enable_grpc, arguments.grpc_port


def ingress_ports(manifests: Manifests) -> list[str]:
    policy = manifests.get("NetworkPolicy", f"{RELEASE}-predictor")
    (rule,) = policy["spec"]["ingress"]
    return [port["port"] for port in rule["ports"]]


def test_grpc_is_off_by_default() -> None:
    manifests = render()

    ports, enabled, _ = predictor_ports(manifests)
    assert enabled is False
    assert set(ports) == {"http"}
    service = manifests.get("Service", RELEASE)
    assert [port.name for port in service_ports(service)] == ["http"]
    assert ingress_ports(manifests) == ["http"]


def test_grpc_on_is_a_named_port_the_predictor_listens_on() -> None:
    manifests = render(GRPC_ON)

    ports, enabled, grpc_port = predictor_ports(manifests)
    assert enabled is True
    assert ports == {"http": 8080, "grpc": 9000}
    assert grpc_port == 9000
    service = manifests.get("Service", RELEASE)
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc == {
        "name": "grpc",
        "port": 9001,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert ingress_ports(manifests) == ["http", "grpc"]
    assert "ERROR" not in lint(GRPC_ON)


def test_a_misspelt_grpc_value_is_refused() -> None:
    with pytest.raises(HelmError, match="enable"):
        render({"grpc": {"enable": True}})
