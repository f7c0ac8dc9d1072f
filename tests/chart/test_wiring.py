"""How the rendered objects fit together and fit the programs they run, asserted on the
objects: selectors and labels, ports by name, the settings the programs really have,
one model location for the Job and the predictors, Secrets referenced, never inlined."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from predictor.guard import route_of
from predictor.settings import PredictorSettings
from predictor.settings import parse_settings as parse_predictor
from tests.chart.pods import (
    Pod,
    describe,
    pod_spec_of,
    replicas,
    selects,
    service_ports,
    service_selector,
    workloads,
)
from tests.chart.render import (
    EXTERNAL_S3,
    MODES,
    NAMESPACE,
    RELEASE,
    HelmError,
    Manifest,
    Manifests,
    default_values,
    render,
)
from training.gate import ExitCode
from training.settings import TrainingSettings
from training.settings import parse_settings as parse_training
from training.store.bucket import S3Settings

ALL_MODES = sorted(MODES)
# Stand in for the Secrets a user creates for an external endpoint (existingSecret,
# predictorExistingSecret).
EXISTING_SECRETS = {
    # Made in the cluster by the bundled MinIO's keys Job (test_minio_keys.py runs it).
    "iris-s3": {"access-key-id": "iris-made", "secret-access-key": "in-the-cluster"},
    "iris-s3-keys": {"access-key-id": "id", "secret-access-key": "key"},
    "iris-s3-read-only": {"access-key-id": "reader", "secret-access-key": "key"},
}


def settings_variables(settings: type[Any], prefix: str = "IRIS_") -> set[str]:
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


TRAINING_VARIABLES = settings_variables(TrainingSettings)
PREDICTOR_VARIABLES = settings_variables(PredictorSettings)
S3_VARIABLES = settings_variables(S3Settings, "IRIS_S3_")


def pod_labels(manifests: Manifests) -> dict[str, dict[str, str]]:
    return {
        f"{each['kind']}/{each['metadata']['name']}": pod_spec_of(each)[0]
        for each in workloads(manifests)
    }


def pod(workload: Manifest, manifests: Manifests) -> Pod:
    return describe(workload, manifests, secrets=EXISTING_SECRETS)


def predictor(manifests: Manifests) -> Pod:
    return pod(manifests.get("Deployment", RELEASE), manifests)


def training(manifests: Manifests) -> Pod:
    return pod(manifests.training_job(), manifests)


def raw_container(workload: Manifest) -> dict[str, Any]:
    spec = pod_spec_of(workload)[1]
    container: dict[str, Any] = spec.containers[0].model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return container


@pytest.mark.parametrize("mode", ALL_MODES)
def test_each_selector_selects_exactly_its_own_pods(mode: str) -> None:
    manifests = MODES[mode].render()
    labels = pod_labels(manifests)
    service = service_selector(manifests.get("Service", RELEASE))
    assert [w for w, found in labels.items() if selects(service, found)] == [
        f"Deployment/{RELEASE}"
    ]
    for deployment in manifests.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        name = f"Deployment/{deployment['metadata']['name']}"
        assert [w for w, found in labels.items() if selects(selector, found)] == [name]
    minio = manifests.find("Service", f"{RELEASE}-minio")
    if minio is not None:
        assert [
            w for w, found in labels.items() if selects(service_selector(minio), found)
        ] == [f"Deployment/{RELEASE}-minio"]
    for each in manifests.of_kind("PodDisruptionBudget"):
        selector = each["spec"]["selector"]["matchLabels"]
        assert [w for w, found in labels.items() if selects(selector, found)] == [
            f"Deployment/{RELEASE}"
        ]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_object_carries_the_standard_labels(mode: str) -> None:
    for each in MODES[mode].render():
        labels = each["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "iris"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "iris-0.1.0"
        assert labels["app.kubernetes.io/component"]
        assert each["metadata"]["namespace"] == NAMESPACE


def test_the_service_monitor_selects_the_service_and_its_named_port() -> None:
    manifests = MODES["minio-cronjob-monitoring"].render()
    monitor = manifests.get("ServiceMonitor")["spec"]
    services = [
        each
        for each in manifests.of_kind("Service")
        if selects(monitor["selector"]["matchLabels"], each["metadata"]["labels"])
    ]
    assert [each["metadata"]["name"] for each in services] == [RELEASE]
    port_names = {port.name for port in service_ports(services[0])}
    assert {endpoint["port"] for endpoint in monitor["endpoints"]} <= port_names
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_the_service_reaches_the_predictor_port_by_name() -> None:
    manifests = MODES["defaults"].render()
    (port,) = service_ports(manifests.get("Service", RELEASE))
    assert port.target_port == "http"
    assert predictor(manifests).named_port(port.target_port) == 8080


@pytest.mark.parametrize("mode", ["defaults", "monitoring-on"])
def test_the_hpa_scales_the_predictor_deployment(mode: str) -> None:
    manifests = MODES[mode].render()
    target = manifests.get("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    deployment = manifests.get("Deployment", RELEASE)
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert replicas(deployment, manifests) == 2


def test_the_predictor_args_parse_with_the_predictors_own_parser() -> None:
    container = predictor(MODES["defaults"].render()).container("predictor")
    assert container.argv[:3] == ("python", "-m", "predictor")
    settings, arguments = parse_predictor(list(container.argv[3:]))
    assert arguments.model_name == "iris"
    assert arguments.http_port == container.ports["http"] == 8080
    assert arguments.enable_grpc is False
    assert settings == PredictorSettings()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_probes_use_the_predictors_routes_on_its_http_port(mode: str) -> None:
    manifests = MODES[mode].render()
    container = predictor(manifests).container("predictor")
    _, arguments = parse_predictor(list(container.argv[3:]))
    probes = container.probes
    assert set(probes) == {"startup", "liveness", "readiness"}
    for probe in probes.values():
        assert probe.port == arguments.http_port
        assert route_of(probe.path) != "other", probe
    assert probes["readiness"].path == f"/v1/models/{arguments.model_name}"
    assert route_of(probes["readiness"].path) == "/v1/models/{model}"
    assert probes["liveness"].path == probes["startup"].path == "/"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_iris_variable_is_a_setting_of_the_program_that_reads_it(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = MODES[mode].render()
    programs = {
        "training": TRAINING_VARIABLES | S3_VARIABLES,
        "predictor": PREDICTOR_VARIABLES | S3_VARIABLES,
    }
    for workload in workloads(manifests):
        described = pod(workload, manifests)
        for container in described.containers:
            program = (
                container.argv[2] if container.argv[:2] == ("python", "-m") else None
            )
            variables = {
                name for name in container.environment if name.startswith("IRIS_")
            }
            if program not in programs:
                assert not variables, f"{described.name} sets {variables}"
                continue
            known = programs[program]
            assert variables <= known, f"{described.name}: {variables - known}"
            for name in [n for n in os.environ if n.startswith("IRIS_")]:
                monkeypatch.delenv(name)
            for name, value in container.environment.items():
                monkeypatch.setenv(name, value)
            if program == "training":
                parsed: Any = parse_training(list(container.argv[3:]))
            else:
                parsed = parse_predictor(list(container.argv[3:]))[0]
            assert parsed.model_uri == container.environment["IRIS_MODEL_URI"]
            if parsed.model_uri.startswith("s3://"):
                s3 = S3Settings()
                assert s3.endpoint == container.environment["IRIS_S3_ENDPOINT"]
                # Both keys, or neither: the AWS credential chain (workload identity).
                keyless = mode == "s3-workload-identity"
                assert (s3.access_key_id is None) == keyless
                assert (s3.secret_access_key is None) == keyless


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def test_values_defaults_are_the_programs_own_defaults() -> None:
    values = default_values()
    for settings, chart in (
        (TrainingSettings, values["training"]["settings"]),
        (PredictorSettings, values["predictor"]["settings"]),
    ):
        fields = {
            camel(name): info.default for name, info in settings.model_fields.items()
        }
        fields.pop("modelUri")
        # The try-it page's switch is the chart's top-level ui.enabled.
        fields.pop("ui", None)
        # MLflow's settings are the chart's training.mlflow, with its Secret.
        tracking = {
            name[len("mlflow") :][0].lower() + name[len("mlflow") + 1 :]: fields.pop(
                name
            )
            for name in [name for name in fields if name.startswith("mlflow")]
        }
        assert chart == fields
        if settings is TrainingSettings:
            assert values["training"]["mlflow"] == {**tracking, "existingSecret": ""}
    assert values["ui"]["enabled"] is PredictorSettings.model_fields["ui"].default


def test_the_job_and_the_predictors_share_the_model_volume() -> None:
    manifests = MODES["defaults"].render()
    job, serving = training(manifests), predictor(manifests)
    (job_mount,) = [m for m in job.container().mounts if m.claim]
    (serving_mount,) = [m for m in serving.container().mounts if m.claim]
    assert job_mount.claim == serving_mount.claim == f"{RELEASE}-models"
    assert job_mount.path == serving_mount.path == "/models"
    assert not job_mount.read_only
    assert serving_mount.read_only
    uri = job.container().environment["IRIS_MODEL_URI"]
    assert uri == serving.container().environment["IRIS_MODEL_URI"] == job_mount.path
    assert manifests.get("PersistentVolumeClaim", job_mount.claim)


def store_environment(container: Any) -> dict[str, str]:
    return {
        name: value
        for name, value in container.environment.items()
        if name == "IRIS_MODEL_URI" or name.startswith("IRIS_S3_")
    }


@pytest.mark.parametrize("mode", ["s3-external", "minio", "minio-cronjob-monitoring"])
def test_the_job_and_the_predictors_share_the_bucket(mode: str) -> None:
    manifests = MODES[mode].render()
    job, serving = training(manifests), predictor(manifests)
    assert store_environment(job.container()) == store_environment(serving.container())
    assert job.claims() == serving.claims() == set()
    references = [
        [
            (e["name"], e["valueFrom"]["secretKeyRef"])
            for e in raw_container(workload)["env"]
            if "valueFrom" in e
        ]
        for workload in (manifests.training_job(), manifests.get("Deployment", RELEASE))
    ]
    assert references[0] == references[1]
    for cron in manifests.of_kind("CronJob"):
        assert store_environment(pod(cron, manifests).container()) == (
            store_environment(job.container())
        )


def test_an_external_bucket_is_where_values_say() -> None:
    environment = training(MODES["s3-external"].render()).container().environment
    s3 = EXTERNAL_S3["storage"]["s3"]
    assert environment["IRIS_MODEL_URI"] == f"s3://{s3['bucket']}/{s3['prefix']}"
    assert environment["IRIS_S3_ENDPOINT"] == s3["endpoint"]


def test_the_bundled_minio_is_the_endpoint_and_holds_the_same_keys() -> None:
    manifests = MODES["minio"].render()
    job = training(manifests).container()
    service = manifests.get("Service", f"{RELEASE}-minio")
    (port,) = service_ports(service)
    assert job.environment["IRIS_S3_ENDPOINT"] == (
        f"http://{RELEASE}-minio.{NAMESPACE}.svc:{port.port}"
    )
    minio_pod = pod(manifests.get("Deployment", f"{RELEASE}-minio"), manifests)
    minio = minio_pod.container("minio")
    listening = minio.argv[minio.argv.index("--address") + 1]
    assert listening == f":{minio_pod.named_port(port.target_port)}"
    assert (
        minio.environment["MINIO_ROOT_USER"] == job.environment["IRIS_S3_ACCESS_KEY_ID"]
    )
    assert (
        minio.environment["MINIO_ROOT_PASSWORD"]
        == (job.environment["IRIS_S3_SECRET_ACCESS_KEY"])
    )
    assert job.environment["IRIS_MODEL_URI"] == "s3://iris/models"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_secrets_are_referenced_never_inlined(mode: str) -> None:
    manifests = MODES[mode].render()
    secret_values = {
        base64.b64decode(value).decode()
        for secret in manifests.of_kind("Secret")
        for value in secret["data"].values()
    }
    for workload in workloads(manifests):
        for entry in raw_container(workload).get("env", []):
            sensitive = any(w in entry["name"] for w in ("KEY", "PASSWORD", "SECRET"))
            if sensitive and "ACCESS_KEY_ID" not in entry["name"]:
                assert "secretKeyRef" in entry.get("valueFrom", {}), entry
            if entry["name"].endswith(("ACCESS_KEY_ID", "ROOT_USER")):
                assert "secretKeyRef" in entry.get("valueFrom", {}), entry
            assert entry.get("value") not in secret_values, entry["name"]


def test_external_s3_keys_come_from_the_existing_secret() -> None:
    manifests = MODES["s3-external"].render()
    env = raw_container(manifests.get("Deployment", RELEASE))["env"]
    references = {
        e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e
    }
    assert references == {"iris-s3-keys"}


def test_training_failures_that_a_retry_cannot_fix_fail_the_job_at_once() -> None:
    job = MODES["defaults"].render().training_job()
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    (fail,) = [rule for rule in rules if rule["action"] == "FailJob"]
    assert fail["onExitCodes"]["containerName"] == raw_container(job)["name"]
    assert set(fail["onExitCodes"]["values"]) == {
        ExitCode.USAGE,
        ExitCode.BELOW_MIN_ACCURACY,
        ExitCode.WORSE_THAN_CURRENT,
    }
    assert ExitCode.STORE_ERROR not in fail["onExitCodes"]["values"]
    assert spec["backoffLimit"] > 0


@pytest.mark.parametrize(
    ("values", "drain"),
    [
        ({}, 3),
        (
            {
                "predictor": {
                    "preStopSleepSeconds": 10,
                    "settings": {"drainSeconds": 12.5},
                    "terminationGracePeriodSeconds": 30,
                }
            },
            12.5,
        ),
    ],
)
def test_pre_stop_and_drain_fit_in_the_grace_period(
    values: dict[str, Any], drain: float
) -> None:
    pod = predictor(render(values))
    container = pod.container("predictor")
    assert container.pre_stop is not None
    assert container.pre_stop[0] == "sleep"
    assert float(container.environment["IRIS_DRAIN_SECONDS"]) == drain
    budget = float(container.pre_stop[1]) + drain + 5
    assert budget <= pod.termination_grace_period_seconds


@pytest.mark.parametrize(
    ("mode", "kept"),
    [
        ("defaults", {"PersistentVolumeClaim/iris-models"}),
        ("pvc-deleted-on-uninstall", set()),
        ("minio", {"PersistentVolumeClaim/iris-minio"}),
    ],
)
def test_uninstall_keeps_the_models_unless_asked(mode: str, kept: set[str]) -> None:
    manifests = MODES[mode].render()
    assert {
        f"{each['kind']}/{each['metadata']['name']}"
        for each in manifests
        if each["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
        == "keep"
    } == kept


def policy_of(policies: list[Manifest], labels: dict[str, str]) -> Manifest:
    (policy,) = [
        p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]
    return policy


@pytest.mark.parametrize("mode", ["defaults", "minio", "s3-external", "cronjob"])
def test_network_policies_select_every_pod_and_open_only_what_is_used(
    mode: str,
) -> None:
    manifests = MODES[mode].render()
    policies = manifests.of_kind("NetworkPolicy")
    for labels in pod_labels(manifests).values():
        policy = policy_of(policies, labels)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    serving = predictor(manifests)
    (ingress,) = policy_of(policies, dict(serving.labels))["spec"]["ingress"]
    assert "from" not in ingress
    assert [serving.named_port(port["port"]) for port in ingress["ports"]] == [8080]
    minio = manifests.find("Deployment", f"{RELEASE}-minio")
    for workload in (manifests.training_job(), manifests.get("Deployment", RELEASE)):
        dns, *store = policy_of(policies, pod_spec_of(workload)[0])["spec"]["egress"]
        assert {port["port"] for port in dns["ports"]} == {53}
        if minio is not None:
            minio_pod = pod(minio, manifests)
            (rule,) = store
            assert selects(
                rule["to"][0]["podSelector"]["matchLabels"], minio_pod.labels
            )
            assert [p["port"] for p in rule["ports"]] == [minio_pod.named_port("api")]
        elif mode == "s3-external":
            (rule,) = store
            assert [p["port"] for p in rule["ports"]] == [443]
        else:
            assert store == []
    if minio is not None:
        (rule,) = manifests.get("NetworkPolicy", f"{RELEASE}-minio")["spec"]["ingress"]
        allowed = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
        every_pod = pod_labels(manifests)
        assert sorted(
            w
            for w, found in every_pod.items()
            if any(selects(a, found) for a in allowed)
        ) == [
            f"Deployment/{RELEASE}",
            f"Job/{manifests.training_job()['metadata']['name']}",
        ]


MLFLOW_PEERS = [{"namespaceSelector": {"matchLabels": {"name": "mlflow"}}}]


@pytest.mark.parametrize(
    ("tracking_uri", "port"),
    [
        ("http://mlflow.mlflow.svc:5000", 5000),
        ("https://mlflow.example.com", 443),
        ("http://mlflow.example.com/tracking", 80),
    ],
)
def test_the_training_and_rollback_jobs_may_reach_the_tracking_server(
    tracking_uri: str, port: int
) -> None:
    values = {
        "training": {
            "mlflow": {"trackingUri": tracking_uri},
            "rollback": {"to": "20260101T000000000000Z-abcdef"},
        },
        "networkPolicy": {"mlflowEgressTo": MLFLOW_PEERS},
    }
    manifests = render(values)
    policies = manifests.of_kind("NetworkPolicy")
    jobs = manifests.of_kind("Job")
    assert len(jobs) == 2
    for job in jobs:
        egress = policy_of(policies, pod_spec_of(job)[0])["spec"]["egress"]
        assert {"ports": [{"port": port, "protocol": "TCP"}], "to": MLFLOW_PEERS} in (
            egress
        )
    # The predictors never talk to MLflow, and nothing opens without a tracking URI.
    served = policy_of(policies, pod_spec_of(manifests.get("Deployment", RELEASE))[0])
    assert all(
        port not in {p["port"] for p in rule["ports"]}
        for rule in served["spec"]["egress"]
    )
    untracked = [
        policy_of(each.of_kind("NetworkPolicy"), pod_spec_of(each.training_job())[0])
        for each in (
            render({"networkPolicy": {"mlflowEgressTo": MLFLOW_PEERS}}),
            render(),
        )
    ]
    assert untracked[0] == untracked[1]


def test_the_tracking_server_is_any_address_on_its_port_unless_narrowed() -> None:
    manifests = render({"training": {"mlflow": {"trackingUri": "http://mlflow:5000"}}})
    policy = policy_of(
        manifests.of_kind("NetworkPolicy"), pod_spec_of(manifests.training_job())[0]
    )
    assert policy["spec"]["egress"][-1] == {
        "ports": [{"port": 5000, "protocol": "TCP"}]
    }


@pytest.mark.parametrize(
    "tracking_uri",
    ["http://127.0.0.1:port", "http://mlflow:99999", "ftp://mlflow", "http://:5000"],
)
def test_a_tracking_uri_no_client_could_use_is_refused_at_render(
    tracking_uri: str,
) -> None:
    # The NetworkPolicy opens the URI's port, so it must have one a client could use.
    with pytest.raises(HelmError, match="trackingUri"):
        render({"training": {"mlflow": {"trackingUri": tracking_uri}}})


def test_topology_spread_selects_the_predictor_pods() -> None:
    manifests = MODES["s3-external"].render()
    spec = manifests.get("Deployment", RELEASE)["spec"]["template"]
    (constraint,) = spec["spec"]["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    assert selects(
        constraint["labelSelector"]["matchLabels"], spec["metadata"]["labels"]
    )


def test_the_helm_test_posts_through_the_service() -> None:
    manifests = MODES["defaults"].render()
    (hook,) = manifests.hooks()
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    tester = pod(hook, manifests).container()
    (port,) = service_ports(manifests.get("Service", RELEASE))
    assert tester.environment["PREDICT_URL"] == (
        f"http://{RELEASE}:{port.port}/v1/models/iris:predict"
    )
    assert tester.image == predictor(manifests).container().image


def test_one_image_runs_every_program_of_the_project() -> None:
    manifests = MODES["minio-cronjob-monitoring"].render()
    images = {
        container.image
        for workload in workloads(manifests)
        for container in pod(workload, manifests).containers
        if container.name != "minio"
    }
    assert images == {"ghcr.io/repository_owner/iris:0.1.0"}
