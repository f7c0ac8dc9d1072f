"""The whole system on a real cluster: trained, served by two replicas, scaled,
monitored, reachable, and able to change under load without losing requests.

The tests run in this order: the later ones change the release.
"""

from __future__ import annotations

import copy
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from kubernetes.client import V1EnvVar, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import (
    KSERVE_EXAMPLE,
    NAMESPACE,
    NODE_PORT,
    RELEASE,
    STORAGE,
    Cluster,
    Load,
    get,
    post,
    selector,
)

# Longer than any one test's own waits added up (test_cluster_path checks it), so a
# slow cluster fails with the wait's message, not pytest's.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("cluster"),
    pytest.mark.timeout(1200),
]

CHART = Path(__file__).resolve().parents[2] / "charts" / "iris"
PREDICT = "/v1/models/iris:predict"
# Where make kind-prometheus runs Prometheus (k8s/prometheus.yaml); the operator names
# the Service of every Prometheus it runs prometheus-operated.
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_SERVICE = "svc/prometheus-operated"


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def without_job_identity(labels: dict[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in labels.items()
        if "controller-uid" not in key
        and key not in ("job-name", "batch.kubernetes.io/job-name")
    }


def served_version() -> str:
    status, body = get(NODE_PORT, "/v1/models/iris/metadata")
    assert status == 200, body
    return str(body["version"])


def deployment_ready(cluster: Cluster) -> bool:
    deployment = cluster.apps.read_namespaced_deployment(RELEASE, NAMESPACE)
    status = deployment.status
    return bool(
        status.ready_replicas
        and status.ready_replicas >= 2
        and status.updated_replicas == status.replicas
        and not status.unavailable_replicas
    )


def predictor_pods(cluster: Cluster) -> list[Any]:
    return list(
        cluster.core.list_namespaced_pod(
            NAMESPACE, label_selector=selector("predictor")
        ).items
    )


def predictor_log_levels(cluster: Cluster) -> set[str]:
    """IRIS_LOG_LEVEL of every predictor pod, as the release rendered it."""
    return {
        str(variable.value)
        for pod in predictor_pods(cluster)
        for variable in pod.spec.containers[0].env
        if variable.name == "IRIS_LOG_LEVEL"
    }


def run(*command: str, stdin: str | None = None) -> str:
    """A command's standard output; it must succeed, or its stderr is the failure."""
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(command[:2])}: {done.stderr}"
    return done.stdout


def helm(*arguments: str, stdin: str | None = None) -> str:
    """The helm CLI on the release's namespace."""
    return run("helm", *arguments, "--namespace", NAMESPACE, stdin=stdin)


def assert_served_through(load: Load) -> None:
    assert load.failure_ratio <= 0.01, (load.failure_ratio, load.failed[:10])


def test_the_training_job_completed_and_published(cluster: Cluster) -> None:
    jobs = cluster.batch.list_namespaced_job(
        NAMESPACE, label_selector=selector("training")
    ).items
    succeeded = [job for job in jobs if job.status.succeeded]
    assert succeeded, [job.metadata.name for job in jobs]
    pods = cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"job-name={succeeded[0].metadata.name}"
    ).items
    # A retried Job leaves failed pods too (MinIO still starting): read the one that
    # succeeded.
    (done,) = [pod for pod in pods if pod.status.phase == "Succeeded"]
    log = cluster.core.read_namespaced_pod_log(done.metadata.name, NAMESPACE)
    assert "published version=" in log


def test_the_minio_keys_job_made_the_secret_outside_the_release(
    cluster: Cluster,
) -> None:
    if STORAGE != "minio":
        pytest.skip("only the bundled MinIO has its keys made by a Job")
    jobs = cluster.batch.list_namespaced_job(
        NAMESPACE, label_selector=selector("minio-keys")
    ).items
    assert jobs, "no keys Job"
    assert all(job.status.succeeded for job in jobs), [j.metadata.name for j in jobs]
    secret = cluster.core.read_namespaced_secret(f"{RELEASE}-s3", NAMESPACE)
    assert set(secret.data) == {"access-key-id", "secret-access-key"}
    # Not Helm's object: an uninstall leaves it, and the reinstall test reads the data.
    assert "app.kubernetes.io/managed-by" not in (secret.metadata.labels or {})


def test_two_ready_predictors_on_different_nodes_where_possible(
    cluster: Cluster,
) -> None:
    assert deployment_ready(cluster)
    pods = predictor_pods(cluster)
    ready = [
        pod
        for pod in pods
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    ]
    assert len(ready) >= 2
    nodes = {pod.spec.node_name for pod in ready}
    if STORAGE == "pvc":
        # A ReadWriteOnce volume (kind's local-path) attaches to one node only.
        pytest.skip(f"predictors share the PVC's node: {nodes}")
    assert len(nodes) >= 2, nodes


def test_the_hpa_reports_current_cpu(cluster: Cluster) -> None:
    def has_cpu() -> bool:
        hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(
            RELEASE, NAMESPACE
        )
        return any(
            metric.resource is not None
            and metric.resource.name == "cpu"
            and metric.resource.current.average_utilization is not None
            for metric in hpa.status.current_metrics or []
        )

    hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(
        RELEASE, NAMESPACE
    )
    assert hpa.spec.scale_target_ref.name == RELEASE
    assert hpa.spec.min_replicas == 2
    eventually(has_cpu, 300, "the HPA reporting CPU from metrics-server")


def test_the_service_monitor_and_the_prometheus_rule_exist(cluster: Cluster) -> None:
    for plural in ("servicemonitors", "prometheusrules"):
        found = cluster.custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", NAMESPACE, plural, RELEASE
        )
        assert found["metadata"]["name"] == RELEASE


@contextmanager
def forwarded(namespace: str, target: str, remote_port: int) -> Iterator[int]:
    """`kubectl port-forward` to target on a free local port, for the block's length."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        [
            "kubectl",
            "--namespace",
            namespace,
            "port-forward",
            target,
            f"{port}:{remote_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield port
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_predictions_through_a_port_forward_to_the_service() -> None:
    with forwarded(NAMESPACE, f"svc/{RELEASE}", 80) as port:

        def answers() -> bool:
            try:
                return post(port, PREDICT, KSERVE_EXAMPLE) == (
                    200,
                    {"predictions": [1, 1]},
                )
            except OSError:
                return False

        eventually(answers, 60, "a prediction through kubectl port-forward")


def prometheus_api(port: int, path: str) -> Any:
    """The data of a Prometheus HTTP API answer, or None while it cannot answer."""
    try:
        status, body = get(port, path)
    except OSError:
        return None
    if status != 200 or body.get("status") != "success":
        return None
    return body["data"]


def test_prometheus_scrapes_every_predictor_and_loads_the_rules(
    cluster: Cluster,
) -> None:
    rule = cluster.custom.get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NAMESPACE, "prometheusrules", RELEASE
    )
    alerts = {
        each["alert"] for group in rule["spec"]["groups"] for each in group["rules"]
    }
    pods = {pod.metadata.name for pod in predictor_pods(cluster)}
    try:
        cluster.core.read_namespaced_service(
            PROMETHEUS_SERVICE.removeprefix("svc/"), PROMETHEUS_NAMESPACE
        )
    except ApiException as error:
        pytest.fail(f"no Prometheus, run make kind-prometheus: {error.reason}")
    up_query = "/api/v1/query?query=" + quote(f'up{{namespace="{NAMESPACE}"}}')
    with forwarded(PROMETHEUS_NAMESPACE, PROMETHEUS_SERVICE, 9090) as port:

        def every_predictor_up() -> bool:
            data = prometheus_api(port, up_query)
            if data is None:
                return False
            up = {
                each["metric"].get("pod"): each["value"][1] for each in data["result"]
            }
            return all(up.get(pod) == "1" for pod in pods)

        eventually(every_predictor_up, 300, "up == 1 for every predictor")

        def rules_loaded_and_evaluated() -> bool:
            data = prometheus_api(port, "/api/v1/rules?type=alert")
            if data is None:
                return False
            loaded = {
                each["name"]: each["health"]
                for group in data["groups"]
                for each in group["rules"]
            }
            return all(loaded.get(alert) == "ok" for alert in alerts)

        eventually(rules_loaded_and_evaluated, 120, "the chart's alerts evaluated")


def test_predictions_through_the_node_port_on_the_host() -> None:
    assert post(NODE_PORT, PREDICT, KSERVE_EXAMPLE) == (200, {"predictions": [1, 1]})


def test_a_second_training_run_is_picked_up_with_no_failed_request(
    cluster: Cluster, load: Load
) -> None:
    before = served_version()
    template = next(
        job
        for job in cluster.batch.list_namespaced_job(
            NAMESPACE, label_selector=selector("training")
        ).items
        if not job.metadata.owner_references
    )
    job = copy.deepcopy(template)
    job.metadata = V1ObjectMeta(
        name=f"{RELEASE}-e2e-retrain-{secrets.token_hex(3)}",
        labels=without_job_identity(template.metadata.labels),
    )
    job.status = None
    # Kubernetes fills in the selector and the pod labels of a new Job.
    job.spec.selector = None
    job.spec.manual_selector = None
    job.spec.template.metadata.labels = without_job_identity(
        job.spec.template.metadata.labels
    )
    container = job.spec.template.spec.containers[0]
    # A different forest, forced past the current one so that it is published.
    changed = {"IRIS_N_ESTIMATORS": "60", "IRIS_FORCE": "true"}
    container.env = [e for e in container.env if e.name not in changed] + [
        V1EnvVar(name=name, value=value) for name, value in changed.items()
    ]
    with load:
        cluster.batch.create_namespaced_job(NAMESPACE, job)

        def finished() -> bool:
            status = cluster.batch.read_namespaced_job(
                job.metadata.name, NAMESPACE
            ).status
            assert not status.failed, "the second training run failed"
            return bool(status.succeeded)

        eventually(finished, 300, "the second training Job")

        def every_replica_serves_a_new_version() -> bool:
            return all(served_version() != before for _ in range(6))

        eventually(every_replica_serves_a_new_version, 120, "the new version served")
        time.sleep(5)
    assert load.failed == [], load.failed[:10]
    assert load.answered > 0
    assert len(load.versions) >= 2


def test_deleting_a_predictor_under_load_loses_at_most_one_percent(
    cluster: Cluster, load: Load
) -> None:
    pods = predictor_pods(cluster)
    with load:
        time.sleep(5)
        cluster.core.delete_namespaced_pod(pods[0].metadata.name, NAMESPACE)
        time.sleep(10)
        eventually(lambda: deployment_ready(cluster), 300, "two ready predictors again")
        time.sleep(5)
    assert load.answered > 100
    assert_served_through(load)


def training_jobs(cluster: Cluster) -> set[str]:
    jobs = cluster.batch.list_namespaced_job(
        NAMESPACE, label_selector=selector("training")
    ).items
    return {str(job.metadata.name) for job in jobs}


def rolled_out_under_load(cluster: Cluster, load: Load, *helm_arguments: str) -> None:
    """A helm command that changes the predictors, run under load: the rollout
    completes with at most 1% of requests lost, and nothing retrains."""
    jobs_before = training_jobs(cluster)
    with load:
        helm(*helm_arguments, "--wait", "--timeout", "10m")
        eventually(lambda: deployment_ready(cluster), 300, "the rollout")
    assert_served_through(load)
    assert training_jobs(cluster) == jobs_before


def test_helm_upgrade_with_a_changed_value_rolls_out_cleanly(
    cluster: Cluster, load: Load
) -> None:
    rolled_out_under_load(
        cluster,
        load,
        *("upgrade", RELEASE, str(CHART), "--reuse-values"),
        *("--set", "predictor.settings.logLevel=DEBUG"),
    )
    # The predictor's log level shapes no model: the same Job, no retraining.
    assert predictor_log_levels(cluster) == {"DEBUG"}
    assert post(NODE_PORT, PREDICT, KSERVE_EXAMPLE) == (200, {"predictions": [1, 1]})


def test_helm_rollback_restores_the_previous_revision_without_retraining(
    cluster: Cluster, load: Load
) -> None:
    # The previous revision renders the same training Job: nothing retrains.
    rolled_out_under_load(cluster, load, "rollback", RELEASE)
    # The chart's default, before the upgrade above set DEBUG.
    assert predictor_log_levels(cluster) == {"INFO"}


def helm_upgrade(*values: str) -> None:
    """helm upgrade of the installed release, its values kept, plus `values`."""
    helm(
        *("upgrade", RELEASE, str(CHART), "--reuse-values", *values),
        *("--wait", "--wait-for-jobs", "--timeout", "5m"),
    )


def store_listing() -> dict[str, Any]:
    """`python -m training versions --json`, run in a predictor with its own store
    settings: listing only reads."""
    listed = run(
        *("kubectl", "--namespace", NAMESPACE, "exec", f"deploy/{RELEASE}", "--"),
        *("python", "-m", "training", "versions", "--json"),
    )
    listing: dict[str, Any] = json.loads(listed)
    return listing


def test_a_helm_value_rolls_the_served_model_back(cluster: Cluster, load: Load) -> None:
    current = served_version()
    # The second training run above published over the first.
    earlier = [
        change["version"]
        for change in store_listing()["history"]
        if change["version"] != current
    ]
    assert earlier, "no earlier version to roll back to"
    target = earlier[-1]
    jobs_before = training_jobs(cluster)
    with load:
        helm_upgrade(
            "--set-string",
            f"training.rollback.to={target}",
            "--set-string",
            "training.rollback.reason=e2e",
        )

        def every_replica_serves_the_target() -> bool:
            return all(served_version() == target for _ in range(6))

        eventually(every_replica_serves_the_target, 120, "the rolled back version")
    assert load.failed == [], load.failed[:10]
    change = store_listing()["history"][-1]
    assert (change["action"], change["version"], change["reason"]) == (
        "rollback",
        target,
        "e2e",
    )
    assert change["previous_version"] == current
    # Who: the rollback Job's pod, by its name.
    assert change["by"].startswith(f"{RELEASE}-rollback-")
    rollback_jobs = training_jobs(cluster) - jobs_before
    assert len(rollback_jobs) == 1
    assert rollback_jobs.pop().startswith(f"{RELEASE}-rollback-")
    # Unset, the rollback Job goes and nothing retrains.
    helm_upgrade("--set-string", "training.rollback.to=")
    assert training_jobs(cluster) == jobs_before


def test_draining_a_node_with_a_predictor_keeps_predictions_served(
    cluster: Cluster, load: Load
) -> None:
    if STORAGE == "pvc":
        # A ReadWriteOnce volume (kind's local-path) holds every predictor on its node.
        pytest.skip("the chart promises spread only with shared storage")
    pods = cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
    ).items
    predictor_nodes = {
        str(pod.spec.node_name)
        for pod in pods
        if pod.metadata.labels["app.kubernetes.io/component"] == "predictor"
    }
    # MinIO's volume is local-path too: draining its node would strand it.
    minio_nodes = {
        str(pod.spec.node_name)
        for pod in pods
        if pod.metadata.labels["app.kubernetes.io/component"] == "minio"
    }
    candidates = sorted(predictor_nodes - minio_nodes)
    assert candidates, (predictor_nodes, minio_nodes)
    node = candidates[0]
    try:
        with load:
            run(
                *("kubectl", "drain", node, "--ignore-daemonsets"),
                *("--delete-emptydir-data", "--timeout", "5m"),
            )
            eventually(lambda: deployment_ready(cluster), 300, "two ready predictors")
    finally:
        subprocess.run(["kubectl", "uncordon", node], check=True)
    assert load.answered > 100
    assert_served_through(load)
    moved = predictor_pods(cluster)
    assert all(pod.spec.node_name != node for pod in moved)


def test_uninstall_then_install_keeps_every_published_version(
    cluster: Cluster,
) -> None:
    before = {row["version"] for row in store_listing()["versions"]}
    installed = json.loads(helm("get", "values", RELEASE, "--output", "json"))
    # Unset, so the reinstall renders no rollback Job.
    installed.get("training", {}).pop("rollback", None)
    helm("uninstall", RELEASE, "--wait", "--timeout", "5m")
    claims = cluster.core.list_namespaced_persistent_volume_claim(
        NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
    ).items
    # The models (PVC mode) or MinIO's data (minio mode) stay, by resource-policy keep;
    # so does MinIO's keys Secret, which the reinstall's keys Job then leaves alone.
    assert claims, "the uninstall deleted the claim that holds the models"
    helm(
        *("install", RELEASE, str(CHART)),
        # Helm reads "-" from stdin (helm pkg/cli/values/options.go, readFile).
        *("--values", "-"),
        *("--wait", "--wait-for-jobs", "--timeout", "5m"),
        stdin=json.dumps(installed),
    )
    assert before <= {row["version"] for row in store_listing()["versions"]}
    assert post(NODE_PORT, PREDICT, KSERVE_EXAMPLE) == (200, {"predictions": [1, 1]})
