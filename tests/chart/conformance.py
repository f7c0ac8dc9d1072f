"""The conformance run: the rendered pods started as they would start in a cluster,
wired together by nothing but what the chart rendered.

The training Job runs first and must publish; then the Deployment that the Service
selects starts its replicas (its HPA's minimum), each checked with its own probes;
the Service routes to the ready ones, round-robin, by ClusterIP and by node port; the
helm test pod runs against the Service; and the replicas stop as the kubelet stops
them. Any break in the wiring surfaces as a NotConformant saying where.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.chart import apiserver
from tests.chart.pods import (
    Pod,
    PodSpecError,
    describe,
    pod_spec_of,
    replicas,
    selects,
    service_ports,
    service_selector,
    workloads,
)
from tests.chart.render import RELEASE, Manifest, Manifests
from tests.chart.sandbox import Cluster, LocalContainer, Termination

PREDICT_PATH = "/v1/models/iris:predict"
# KServe's sklearn-iris example and its answer.
PREDICT_BODY = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
PREDICT_ANSWER = {"predictions": [1, 1]}
JOB_SECONDS = 120


class NotConformant(AssertionError):  # noqa: N818 - the rendered pods are not conformant
    """The rendered pods do not work together."""


@dataclass
class Running:
    """The system as the conformance run started it."""

    cluster: Cluster
    manifests: Manifests
    predictors: list[LocalContainer]
    service: str


def _describe(workload: Manifest, manifests: Manifests, name: str) -> Pod:
    try:
        return describe(workload, manifests, name=name)
    except PodSpecError as error:
        raise NotConformant(
            f"{workload['kind']} {name} cannot start: {error}"
        ) from error


def _wait_for_port(container: LocalContainer, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if container.process.poll() is not None:
            break
        try:
            socket.create_connection((container.address.ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise NotConformant(
        f"{container.pod.name} never listened on port {port}:\n{container.log()}"
    )


def preflight(manifests: Manifests) -> None:
    """Every rendered pod can be described: its ports, keys and volumes resolve. A pod
    that cannot would never start, or never pass a probe, in a cluster either."""
    for workload in workloads(manifests):
        _describe(workload, manifests, workload["metadata"]["name"])


def start(cluster: Cluster, manifests: Manifests) -> Running:
    """The whole run up to serving: keys, store, training Job, then the predictors."""
    manifests = make_keys(cluster, manifests)
    preflight(manifests)
    cluster.add_services(manifests)
    start_bundled_store(cluster, manifests)
    run_training(cluster, manifests)
    return start_predictors(cluster, manifests)


def make_keys(cluster: Cluster, manifests: Manifests) -> Manifests:
    """The bundled MinIO's keys Job, run against an API server, before any pod that
    reads its Secret; the rendered objects plus the Secrets it made."""
    job = apiserver.keys_job(manifests)
    if job is None:
        return manifests
    namespace = job["metadata"]["namespace"]
    with apiserver.serving(cluster.workdir / "apiserver", namespace) as api:
        done = apiserver.run_keys_job(job, manifests, api)
    if done.returncode != 0:
        raise NotConformant(
            f"Job {job['metadata']['name']} exited {done.returncode}:\n{done.stderr}"
        )
    return apiserver.with_objects(manifests, api.secrets)


def start_bundled_store(
    cluster: Cluster, manifests: Manifests
) -> LocalContainer | None:
    """The bundled MinIO's pod, with nanio in place of the minio binary: its port,
    its data volume, and its root keys from the rendered Secret."""
    service = manifests.find("Service", f"{RELEASE}-minio")
    if service is None:
        return None
    workload = _selected_workload(service, manifests)
    pod = _describe(workload, manifests, f"{workload['metadata']['name']}-0")
    minio = pod.container("minio")
    (port,) = service_ports(service)
    listen = pod.named_port(port.target_port)
    (data,) = [mount for mount in minio.mounts if mount.claim is not None]
    address = cluster.add_pod_network()
    argv = [sys.executable, "-m", "nanio", "serve", "--host", "0.0.0.0"]  # noqa: S104
    argv += ["--port", str(listen), "--data-dir", data.path, "--log-level", "warning"]
    running = cluster.start(
        pod,
        minio,
        address,
        argv=[*argv, "--no-access-log"],
        extra_environment={
            "NANIO_ACCESS_KEY": minio.environment["MINIO_ROOT_USER"],
            "NANIO_SECRET_KEY": minio.environment["MINIO_ROOT_PASSWORD"],
        },
    )
    _wait_for_port(running, listen, 30)
    cluster.set_endpoints(service["metadata"]["name"], [(address.ip, pod)])
    return running


def run_training(cluster: Cluster, manifests: Manifests) -> LocalContainer:
    """The training Job's pod, to its end; it must publish (exit 0)."""
    job = manifests.training_job()
    pod = _describe(job, manifests, f"{job['metadata']['name']}-0")
    if pod.restart_policy != "Never":
        raise NotConformant(f"Job {pod.name} restarts its pod: {pod.restart_policy}")
    running = cluster.start(pod, pod.container(), cluster.add_pod_network())
    try:
        status = running.process.wait(timeout=JOB_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise NotConformant(f"training Job ran over {JOB_SECONDS}s") from error
    if status != 0:
        raise NotConformant(f"training Job exited {status}:\n{running.log()}")
    return running


def _selected_workload(service: Manifest, manifests: Manifests) -> Manifest:
    selector = service_selector(service)
    chosen = [
        workload
        for workload in manifests.of_kind("Deployment")
        if selects(selector, pod_spec_of(workload)[0])
    ]
    if len(chosen) != 1:
        names = [each["metadata"]["name"] for each in chosen]
        raise NotConformant(
            f"Service {service['metadata']['name']} selects the pods of {names}, "
            "expected exactly one Deployment"
        )
    return chosen[0]


def _wait_for_probe(container: LocalContainer, kind: str) -> None:
    """Probe as the kubelet does, until a success or the failure threshold."""
    probe = container.container.probes.get(kind)
    if probe is None:
        raise NotConformant(f"{container.pod.name} has no {kind} probe")
    time.sleep(probe.initial_delay_seconds)
    seen: list[int] = []
    for _ in range(probe.failure_threshold):
        if container.process.poll() is not None:
            break
        status = container.probe(kind)
        if 200 <= status < 400:
            return
        seen.append(status)
        time.sleep(probe.period_seconds)
    raise NotConformant(
        f"{container.pod.name}: {kind} probe GET {probe.path} on port {probe.port} "
        f"failed {len(seen)} times (statuses {seen}, exit "
        f"{container.process.poll()}):\n{container.log()}"
    )


def start_predictors(cluster: Cluster, manifests: Manifests) -> Running:
    """The replicas of the Deployment behind the release's Service, checked with their
    own probes, then added to the Service's endpoints."""
    service = manifests.get("Service", RELEASE)
    deployment = _selected_workload(service, manifests)
    count = replicas(deployment, manifests)
    name = deployment["metadata"]["name"]
    started = []
    for index in range(count):
        pod = _describe(deployment, manifests, f"{name}-{index}")
        started.append(cluster.start(pod, pod.container(), cluster.add_pod_network()))
    for container in started:
        _wait_for_probe(container, "startup")
    for container in started:
        _wait_for_probe(container, "liveness")
        _wait_for_probe(container, "readiness")
    cluster.set_endpoints(RELEASE, [(c.address.ip, c.pod) for c in started])
    return Running(cluster, manifests, started, RELEASE)


def post_prediction(host: str, port: int) -> tuple[int, object]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(
            "POST",
            PREDICT_PATH,
            body=json.dumps(PREDICT_BODY),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def predictions_served(container: LocalContainer, service: Manifest) -> float:
    """Predictions a replica answered, from its /metrics on the Service's http port."""
    (port,) = [p for p in service_ports(service) if p.name == "http"]
    status, body = container.request(
        "GET", "/metrics", container.pod.named_port(port.target_port)
    )
    if status != 200:
        raise NotConformant(f"{container.pod.name}: GET /metrics answered {status}")
    total = 0.0
    for line in body.decode().splitlines():
        series = line.startswith("iris_http_requests_total{")
        if series and ":predict" in line and 'code="200"' in line:
            total += float(line.rpartition(" ")[2])
    return total


def run_helm_test(cluster: Cluster, manifests: Manifests) -> LocalContainer:
    """The helm test pod, against the Service; it must succeed."""
    (hook,) = [
        each
        for each in manifests.hooks()
        if each["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    pod = _describe(hook, manifests, hook["metadata"]["name"])
    running = cluster.start(pod, pod.container(), cluster.add_pod_network())
    status = running.process.wait(timeout=120)
    if status != 0:
        raise NotConformant(f"helm test pod exited {status}:\n{running.log()}")
    return running


def stop_all(containers: Sequence[LocalContainer]) -> list[Termination]:
    """Stop containers at once, as a scale-down or an uninstall does."""
    results: list[Termination | None] = [None] * len(containers)

    def stop(index: int) -> None:
        results[index] = containers[index].terminate()

    threads = [threading.Thread(target=stop, args=(i,)) for i in range(len(containers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [result for result in results if result is not None]
