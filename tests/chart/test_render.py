"""The chart as Helm renders it: every mode lints and renders what it switches on, and
values that are wrong are refused with a message that says which."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.chart.pods import pod_spec_of, workloads
from tests.chart.render import (
    CHART,
    EXTERNAL_S3,
    MODES,
    MONITORING_APIS,
    NAMESPACE,
    NEWEST_KUBERNETES,
    OLDEST_KUBERNETES,
    RELEASE,
    HelmError,
    default_values,
    lint,
    notes,
    render,
)

SCHEMA_REFUSAL = "values don't meet the specifications of the schema"


def chart_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return loaded


def test_chart_metadata_and_the_validated_kubernetes_versions() -> None:
    chart = chart_yaml()
    assert chart["apiVersion"] == "v2"
    assert (chart["name"], chart["version"], chart["appVersion"]) == (
        "iris",
        "0.1.0",
        "0.1.0",
    )
    assert chart["kubeVersion"] == f">={OLDEST_KUBERNETES}.0-0", (
        "the tests validate against the oldest supported version: update render.py"
    )


def test_an_older_kubernetes_is_refused_and_a_newer_one_accepted() -> None:
    with pytest.raises(HelmError, match="kubeVersion"):
        render(kube_version="1.28")
    newest_minor = int(NEWEST_KUBERNETES.split(".")[1])
    assert render(kube_version=f"1.{newest_minor + 5}").get("Deployment")


def test_a_parent_chart_can_pass_global_values_and_a_condition() -> None:
    # Helm hands every subchart `global`; a parent often switches it with iris.enabled.
    manifests = render(
        {"global": {"imageRegistry": "registry.example"}, "enabled": True}
    )
    assert manifests.get("Deployment")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_passes_strict_lint(mode: str) -> None:
    output = lint(MODES[mode].values)
    assert "1 chart(s) linted, 0 chart(s) failed" in output


def names(manifests: Any, kind: str) -> list[str]:
    return sorted(each["metadata"]["name"] for each in manifests.of_kind(kind))


def test_defaults_install_a_pvc_a_job_and_autoscaled_predictors() -> None:
    manifests = MODES["defaults"].render()
    assert sorted(set(manifests.kinds())) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Pod",
        "Service",
        "ServiceAccount",
    ]
    assert names(manifests, "Deployment") == [RELEASE]
    assert names(manifests, "Service") == [RELEASE]
    (job,) = names(manifests, "Job")
    assert re.fullmatch(f"{RELEASE}-train-[0-9a-f]{{10}}", job)
    assert names(manifests, "PersistentVolumeClaim") == [f"{RELEASE}-models"]
    assert names(manifests, "ServiceAccount") == [
        f"{RELEASE}-predictor",
        f"{RELEASE}-training",
    ]
    service = manifests.get("Service", RELEASE)["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    # Only the helm test pod is a hook: the training Job must run on a plain install.
    assert [each["kind"] for each in manifests.hooks()] == ["Pod"]


def test_the_release_name_is_the_service_name_when_it_holds_the_chart_name() -> None:
    assert names(MODES["defaults"].render(), "Service") == ["iris"]
    manifests = render({"fullnameOverride": "classifier"})
    assert names(manifests, "Deployment") == ["classifier"]


def test_with_the_hpa_on_the_deployment_leaves_replicas_to_it() -> None:
    manifests = MODES["defaults"].render()
    assert "replicas" not in manifests.get("Deployment", RELEASE)["spec"]
    hpa = manifests.get("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_with_the_hpa_off_the_deployment_runs_two_replicas() -> None:
    manifests = MODES["hpa-off"].render()
    assert manifests.of_kind("HorizontalPodAutoscaler") == []
    assert manifests.get("Deployment", RELEASE)["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("mode", "rendered"),
    [
        ("defaults", False),
        ("monitoring-on", True),
        ("monitoring-default-with-crds", False),
        ("monitoring-off-with-crds", False),
    ],
)
def test_monitoring_renders_exactly_when_enabled(mode: str, rendered: bool) -> None:
    # Never from the cluster's APIs: helm template (Argo CD, Flux) does not see them.
    manifests = MODES[mode].render()
    assert bool(manifests.of_kind("ServiceMonitor")) is rendered
    assert bool(manifests.of_kind("PrometheusRule")) is rendered


@pytest.mark.parametrize("switch", ["serviceMonitor", "prometheusRule"])
def test_a_monitoring_switch_left_null_renders_nothing_even_with_the_crds(
    switch: str,
) -> None:
    # null (Helm drops the key) once meant "detect the API"; now it is plain off.
    assert default_values()["metrics"][switch]["enabled"] is False
    manifests = render(
        {"metrics": {switch: {"enabled": None}}}, api_versions=MONITORING_APIS
    )
    kind = {"serviceMonitor": "ServiceMonitor", "prometheusRule": "PrometheusRule"}
    assert manifests.of_kind(kind[switch]) == []


def test_the_cronjob_retrains_one_at_a_time_with_the_jobs_spec() -> None:
    manifests = MODES["cronjob"].render()
    cron = manifests.get("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "0 3 * * *"
    assert cron["spec"]["jobTemplate"]["spec"] == manifests.training_job()["spec"]
    assert MODES["defaults"].render().of_kind("CronJob") == []


def test_bundled_minio_mode_replaces_the_pvc_with_minio() -> None:
    manifests = MODES["minio"].render()
    assert names(manifests, "Deployment") == [RELEASE, f"{RELEASE}-minio"]
    assert names(manifests, "Service") == [RELEASE, f"{RELEASE}-minio"]
    assert names(manifests, "PersistentVolumeClaim") == [f"{RELEASE}-minio"]
    # No keys are rendered: a Job creates the Secret in the cluster (test_minio_keys).
    assert names(manifests, "Secret") == []
    (minio,) = manifests.get("Deployment", f"{RELEASE}-minio")["spec"]["template"][
        "spec"
    ]["containers"]
    # RELEASE.2025-10-15T17-29-55Z is MinIO's fix for CVE-2025-62506.
    release = re.search(r":RELEASE\.([\dT-]+)Z@sha256:[0-9a-f]{64}$", minio["image"])
    assert release is not None, minio["image"]
    assert release.group(1) >= "2025-10-15T17-29-55"


# The distribution reference grammar: name[:tag][@digest].
IMAGE_REFERENCE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_image_is_a_valid_reference(mode: str) -> None:
    for workload in workloads(MODES[mode].render()):
        for container in pod_spec_of(workload)[1].containers:
            assert IMAGE_REFERENCE.match(str(container.image)), container.image


def test_external_s3_mode_renders_no_store_of_its_own() -> None:
    manifests = MODES["s3-external"].render()
    assert manifests.of_kind("PersistentVolumeClaim") == []
    assert manifests.of_kind("Secret") == []
    assert names(manifests, "Deployment") == [RELEASE]


def test_an_existing_claim_is_used_and_not_created() -> None:
    manifests = MODES["pvc-existing-claim"].render()
    assert manifests.of_kind("PersistentVolumeClaim") == []
    for kind in ("Deployment", "Job"):
        (volume,) = [
            v
            for v in manifests.of_kind(kind)[0]["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert volume["persistentVolumeClaim"]["claimName"] == "shared-models"


def test_every_feature_switches_off() -> None:
    manifests = MODES["clusterip-features-off"].render()
    assert sorted(set(manifests.kinds())) == [
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]
    service = manifests.get("Service", RELEASE)["spec"]
    assert service["type"] == "ClusterIP"
    assert "nodePort" not in service["ports"][0]
    deployment = manifests.get("Deployment", RELEASE)["spec"]
    assert deployment["replicas"] == 1
    assert "topologySpreadConstraints" not in deployment["template"]["spec"]


def test_a_null_node_port_lets_kubernetes_choose() -> None:
    manifests = render({"service": {"nodePort": None}})
    port = manifests.get("Service", RELEASE)["spec"]["ports"][0]
    assert "nodePort" not in port


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
        ({"predictor": {"replicas": 3}}, "at '/predictor'"),
        ({"training": {"settings": {"nEstimator": 10}}}, "'nEstimator' not allowed"),
        ({"predictor": {"replicaCount": "two"}}, "at '/predictor/replicaCount'"),
        ({"storage": {"type": "nfs"}}, "at '/storage/type'"),
        ({"service": {"nodePort": 8080}}, "at '/service/nodePort'"),
        ({"service": {"nodePort": 40000}}, "at '/service/nodePort'"),
        ({"service": {"type": "Ingress"}}, "at '/service/type'"),
        (
            {"training": {"settings": {"algorithm": "svm"}}},
            "at '/training/settings/algorithm'",
        ),
        (
            {"training": {"settings": {"testFraction": 1.5}}},
            "at '/training/settings/testFraction'",
        ),
        (
            {"training": {"settings": {"keepVersions": 1}}},
            "at '/training/settings/keepVersions'",
        ),
        ({"autoscaling": {"enabled": "yes"}}, "at '/autoscaling/enabled'"),
        ({"storage": {"s3": {"endpoint": "minio:9000"}}}, "at '/storage/s3/endpoint'"),
        ({"storage": {"s3": {"bucket": "Models_Bucket"}}}, "at '/storage/s3/bucket'"),
        (
            {"storage": {"pvc": {"accessModes": ["ReadWriteAll"]}}},
            "at '/storage/pvc/accessModes/0'",
        ),
        (
            {"metrics": {"serviceMonitor": {"enabled": "auto"}}},
            "at '/metrics/serviceMonitor/enabled'",
        ),
        ({"predictor": {"resources": {"limits": {"gpu": 1}}}}, "'gpu' not allowed"),
    ],
)
def test_the_schema_refuses_wrong_values(values: Mapping[str, Any], where: str) -> None:
    with pytest.raises(HelmError) as refused:
        render(values)
    assert SCHEMA_REFUSAL in refused.value.output
    assert where in refused.value.output


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"minio": {"enabled": True}}, "minio.enabled needs storage.type: s3"),
        ({"storage": {"type": "s3"}}, "storage.type s3 needs storage.s3.endpoint"),
        (
            {
                "storage": {
                    "type": "s3",
                    "s3": {
                        "endpoint": "https://s3.example.com",
                        "predictorExistingSecret": "iris-s3-read-only",
                    },
                }
            },
            "predictorExistingSecret needs storage.s3.existingSecret",
        ),
        (
            {"predictor": {"terminationGracePeriodSeconds": 10}},
            r"must cover preStopSleepSeconds \+ settings.drainSeconds",
        ),
        (
            {"autoscaling": {"minReplicas": 8}},
            "must not exceed autoscaling.maxReplicas",
        ),
        (
            {
                **EXTERNAL_S3,
                "autoscaling": {"enabled": False},
                "predictor": {"replicaCount": 1},
            },
            "podDisruptionBudget.minAvailable .1. must be below",
        ),
        (
            {"predictor": {"topologySpread": {"enabled": True}}},
            "predictor.topologySpreadConstraints need storage every node can read",
        ),
        (
            {"podDisruptionBudget": {"enabled": True}},
            "would block its drain forever",
        ),
        (
            {"storage": {"pvc": {"accessModes": ["ReadWriteOncePod"]}}},
            "ReadWriteOncePod lets one pod mount the models",
        ),
    ],
)
def test_values_that_cannot_work_together_are_refused(
    values: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(HelmError) as refused:
        render(values)
    assert re.search(message, refused.value.output), refused.value.output


def _leaf_paths(values: Any, prefix: str = "") -> set[str]:
    if isinstance(values, dict) and values:
        paths: set[str] = set()
        for key, value in values.items():
            paths |= _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return paths
    return {prefix}


def template_value_paths() -> set[str]:
    """Every .Values.a.b path the templates read ($rule aliases included)."""
    paths = set()
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            text = template.read_text()
            paths |= set(re.findall(r"\.Values((?:\.[A-Za-z0-9_]+)+)", text))
            for alias, base in re.findall(
                r"\{\{-? (\$\w+) := \.Values((?:\.\w+)+)", text
            ):
                for rest in re.findall(re.escape(alias) + r"((?:\.\w+)+)", text):
                    paths.add(base + rest)
    return {path.lstrip(".") for path in paths}


def test_templates_read_only_values_that_exist_and_every_value_is_read() -> None:
    defaults = _leaf_paths(default_values())
    read = template_value_paths()
    prefixes = {
        path.rsplit(".", n)[0] for path in defaults for n in range(path.count(".") + 1)
    }
    unknown = read - prefixes
    assert not unknown, f"templates read values that values.yaml lacks: {unknown}"
    unread = {
        path
        for path in defaults
        if not any(path == r or path.startswith(r + ".") for r in read)
    }
    assert not unread, f"values.yaml keys no template reads: {unread}"


def test_every_key_of_values_yaml_has_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    data_blocks = (
        "resources",
        "dnsTo",
        "labels",
        "accessModes",
        "requests",
        "limits",
        "podSecurityContext",
        "containerSecurityContext",
        "hosts",
        "matches",
    )
    skipping_under: int | None = None
    for number, line in enumerate(lines):
        key = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        if skipping_under is not None and indent > skipping_under:
            continue
        skipping_under = indent if key.group(2) in data_blocks else None
        previous = lines[number - 1].strip()
        assert previous.startswith("#"), f"values.yaml:{number + 1} {line.strip()}"


def test_notes_tell_how_to_reach_the_predictor() -> None:
    text = notes()
    assert f"kubectl --namespace {NAMESPACE} port-forward svc/{RELEASE} 8080:80" in text
    assert f"http://{RELEASE}.{NAMESPACE}.svc:80" in text
    assert "curl -X POST localhost:8080/v1/models/iris:predict" in text
    assert "curl localhost:8080/v1/models/iris/metadata" in text
    assert "NODE_PORT" not in text
    assert "loadBalancer" not in text
    job = render().training_job()["metadata"]["name"]
    assert f"logs --follow job/{job}" in text
    assert f"wait --for=condition=Complete job/{job}" in text
    assert f"rollout status deployment/{RELEASE}" in text
    assert '{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}' in text


def test_notes_for_each_exposure_mode() -> None:
    fixed = notes({"service": {"type": "NodePort", "nodePort": 30080}})
    assert "NODE_PORT=30080" in fixed
    assert '"http://$NODE_IP:$NODE_PORT/v1/models/iris:predict"' in fixed
    chosen = notes({"service": {"type": "NodePort"}})
    assert "jsonpath='{.spec.ports[0].nodePort}'" in chosen
    balanced = notes({"service": {"type": "LoadBalancer"}})
    assert "{.status.loadBalancer.ingress[0].ip}" in balanced
    assert '"http://$LB:80/v1/models/iris:predict"' in balanced
    assert "NODE_PORT" not in balanced


def test_notes_tell_where_the_minio_keys_are() -> None:
    values = {"storage": {"type": "s3"}, "minio": {"enabled": True}}
    text = notes(values)
    # The Secret the keys Job makes in the cluster, with the values' key names.
    s3 = default_values()["storage"]["s3"]
    for key in (s3["accessKeyIdKey"], s3["secretAccessKeyKey"]):
        assert (
            f"get secret {RELEASE}-s3 -o jsonpath='{{.data.{key}}}' | base64 -d"
        ) in text
    assert "MinIO" not in notes()
