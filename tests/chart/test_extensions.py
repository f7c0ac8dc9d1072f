"""The extension points users expect from podinfo's and Bitnami's charts, each seen
on the rendered pods (test_objects validates the same render against Kubernetes)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import V1PodSpec

from tests.chart.pods import pod_spec_of, workloads
from tests.chart.render import MODES, RELEASE, HelmError, Manifests, render

VALUES = MODES["extension-points"].values


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return MODES["extension-points"].render()


def pod_of(manifests: Manifests, kind: str) -> tuple[dict[str, str], V1PodSpec]:
    name = RELEASE if kind == "Deployment" else None
    return pod_spec_of(manifests.get(kind, name))


def test_the_image_is_pulled_by_digest(manifests: Manifests) -> None:
    images = {
        container.image
        for workload in workloads(manifests)
        for container in pod_spec_of(workload)[1].containers
    }
    assert images == {f"ghcr.io/repository_owner/iris@{VALUES['image']['digest']}"}


def test_common_labels_are_on_every_object_but_no_selector(
    manifests: Manifests,
) -> None:
    for each in manifests:
        assert each["metadata"]["labels"]["team"] == "ml", each["metadata"]["name"]
    selector = manifests.get("Deployment", RELEASE)["spec"]["selector"]
    assert "team" not in selector["matchLabels"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pod_labels_priority_env_and_volumes(manifests: Manifests, kind: str) -> None:
    own: dict[str, Any] = VALUES["predictor" if kind == "Deployment" else "training"]
    labels, spec = pod_of(manifests, kind)
    assert own["podLabels"].items() <= labels.items()
    assert spec.priority_class_name == own["priorityClassName"]
    (container,) = spec.containers
    environment = {e.name: e.value for e in container.env or []}
    assert environment["OMP_NUM_THREADS"] == own["extraEnv"][0]["value"]
    assert any(e.name == "IRIS_MODEL_URI" for e in container.env or [])
    workload = manifests.get(kind, RELEASE if kind == "Deployment" else None)
    (raw,) = workload["spec"]["template"]["spec"]["containers"]
    assert raw["envFrom"] == own["extraEnvFrom"]
    mounts = {m.name: m.mount_path for m in container.volume_mounts or []}
    assert "tmp" in mounts
    volumes = {v.name for v in spec.volumes or []}
    for mount in own["extraVolumeMounts"]:
        assert mounts[mount["name"]] == mount["mountPath"]
        assert mount["name"] in volumes


def test_raw_topology_spread_constraints_replace_the_charts(
    manifests: Manifests,
) -> None:
    _, spec = pod_of(manifests, "Deployment")
    (constraint,) = spec.topology_spread_constraints or []
    assert constraint.topology_key == "topology.kubernetes.io/zone"
    assert constraint.when_unsatisfiable == "DoNotSchedule"


def test_raw_topology_spread_on_a_read_write_once_volume_is_refused() -> None:
    raw = VALUES["predictor"]["topologySpreadConstraints"]
    with pytest.raises(HelmError, match="need storage every node can read"):
        render({"predictor": {"topologySpreadConstraints": raw}})


def test_openshift_can_assign_the_uid(manifests: Manifests) -> None:
    for workload in workloads(manifests):
        _, spec = pod_spec_of(workload)
        assert spec.security_context is not None
        assert spec.security_context.run_as_user is None
        assert spec.security_context.run_as_non_root is True
        for container in spec.containers:
            context = container.security_context
            assert context is not None
            assert context.run_as_user is None
            assert context.read_only_root_filesystem is True
            assert context.capabilities is not None
            assert context.capabilities.drop == ["ALL"]


def test_the_defaults_keep_uid_1000() -> None:
    for workload in workloads(render()):
        _, spec = pod_spec_of(workload)
        assert spec.security_context is not None
        assert spec.security_context.run_as_user == 1000


def http_port(manifests: Manifests) -> int:
    service = manifests.get("Service", RELEASE)
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    assert isinstance(port, int)
    return port


def test_the_ingress_routes_its_hosts_to_the_services_http_port(
    manifests: Manifests,
) -> None:
    ingress = manifests.get("Ingress", RELEASE)
    own = VALUES["ingress"]
    assert ingress["spec"]["ingressClassName"] == own["className"]
    assert ingress["metadata"]["annotations"] == own["annotations"]
    assert ingress["spec"]["tls"] == own["tls"]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [
        host["host"] for host in own["hosts"]
    ]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == own["hosts"][0]["paths"][0]["path"]
    assert path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}
    http_port(manifests)


def test_the_http_route_attaches_to_its_gateway_and_sends_to_the_service(
    manifests: Manifests,
) -> None:
    route = manifests.get("HTTPRoute", RELEASE)
    own = VALUES["httpRoute"]
    assert route["spec"]["parentRefs"] == own["parentRefs"]
    assert route["spec"]["hostnames"] == own["hostnames"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    # A backendRef names a Service port by number only: the number of port http.
    assert rule["backendRefs"] == [{"name": RELEASE, "port": http_port(manifests)}]


def test_the_http_route_follows_a_changed_service_port() -> None:
    route = render(
        {
            "service": {"port": 8000},
            "httpRoute": {"enabled": True, "parentRefs": [{"name": "gateway"}]},
        }
    ).get("HTTPRoute", RELEASE)
    assert route["spec"]["rules"][0]["backendRefs"][0]["port"] == 8000


def test_ingress_and_http_route_are_off_by_default() -> None:
    kinds = render().kinds()
    assert "Ingress" not in kinds
    assert "HTTPRoute" not in kinds


def test_an_http_route_without_a_gateway_is_refused() -> None:
    with pytest.raises(
        HelmError, match=r"httpRoute\.enabled needs httpRoute\.parentRefs"
    ):
        render({"httpRoute": {"enabled": True}})


def test_an_ingress_without_hosts_is_refused() -> None:
    with pytest.raises(HelmError, match=r"ingress\.enabled needs ingress\.hosts"):
        render({"ingress": {"enabled": True, "hosts": []}})


@pytest.mark.parametrize(
    "values",
    [
        {"ingress": {"enabled": True, "classname": "nginx"}},
        {"ingress": {"hosts": [{"host": "a", "paths": [{"path": "/"}]}]}},
        {"httpRoute": {"parentRefs": [{"nam": "gateway"}]}},
        {"httpRoute": {"hostname": ["iris.example.com"]}},
    ],
    ids=["class-name typo", "path without type", "parentRef typo", "hostnames typo"],
)
def test_the_schema_rejects_ingress_and_route_typos(values: dict[str, Any]) -> None:
    with pytest.raises(HelmError, match="values don't meet the specifications"):
        render(values)
