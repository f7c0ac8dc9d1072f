"""The rendered pods, run: the Job publishes, two predictor replicas serve it through
the Service, and a template that breaks the wiring fails the run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.chart import conformance
from tests.chart.conformance import (
    PREDICT_ANSWER,
    NotConformant,
    post_prediction,
    predictions_served,
    run_helm_test,
    run_training,
    start_predictors,
    stop_all,
)
from tests.chart.promql import exposed_names, monitored_names
from tests.chart.render import CHART, MODES, RELEASE, render
from tests.chart.sandbox import Cluster
from training.store import open_store

pytestmark = pytest.mark.timeout(240)


def test_the_job_publishes_then_two_replicas_serve_through_the_service(
    cluster: Cluster,
) -> None:
    # As make kind-up installs it: the defaults and the kind values' NodePort.
    kind_values = yaml.safe_load((CHART / "ci" / "kind-values.yaml").read_text())
    manifests = render(kind_values)
    conformance.preflight(manifests)
    cluster.add_services(manifests)
    job = run_training(cluster, manifests)
    (claim,) = job.pod.claims()
    published = open_store(str(cluster.workdir / "claims" / claim)).load_current()
    assert published is not None, job.log()
    assert "PUBLISHED to /models" in job.log()

    running = start_predictors(cluster, manifests)
    assert len(running.predictors) == 2
    assert len({p.address.ip for p in running.predictors}) == 2
    for predictor in running.predictors:
        assert predictor.probe("readiness") == 200
        assert predictor.probe("liveness") == 200
        assert predictor.probe("startup") == 200

    ip, port, _ = cluster.service_url(RELEASE, "http", "/")
    node_ip, node_port = cluster.node_port(RELEASE, "http")
    for _ in range(3):
        assert post_prediction(ip, port) == (200, PREDICT_ANSWER)
        assert post_prediction(node_ip, node_port) == (200, PREDICT_ANSWER)
    service = manifests.get("Service", RELEASE)
    served = [predictions_served(p, service) for p in running.predictors]
    assert served == [3, 3], "the Service should send connections round-robin"
    # Every series the alerts and the dashboard query, a replica exposes.
    first = running.predictors[0]
    metrics = first.request("GET", "/metrics", first.pod.named_port("http"))[1]
    assert monitored_names() - {"up"} <= exposed_names(metrics.decode())

    run_helm_test(cluster, manifests)
    assert sum(predictions_served(p, service) for p in running.predictors) == 7

    # Leaving the Service first, as an endpoint removal does, then preStop and drain.
    cluster.set_endpoints(RELEASE, [])
    for termination in stop_all(running.predictors):
        grace = running.predictors[0].pod.termination_grace_period_seconds
        assert termination.exit_code == 0
        assert not termination.killed
        assert termination.seconds < grace
    log = running.predictors[0].log()
    assert "draining readiness=false" in log


def test_with_the_bundled_minio_the_job_and_replicas_share_the_bucket(
    cluster: Cluster,
) -> None:
    manifests = MODES["minio"].render()
    running = conformance.start(cluster, manifests)
    assert len(running.predictors) == 2
    for predictor in running.predictors:
        assert predictor.probe("readiness") == 200
        assert "uri=s3://iris/models" in predictor.log()
    ip, port, _ = cluster.service_url(RELEASE, "http", "/")
    for _ in range(4):
        assert post_prediction(ip, port) == (200, PREDICT_ANSWER)
    run_helm_test(cluster, manifests)


def broken_chart(tmp_path: Path, template: str, old: str, new: str) -> Path:
    """A copy of the chart with one template edited; the edit must apply once."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    path = chart / "templates" / template
    text = path.read_text()
    assert text.count(old) == 1, f"{template} should hold {old!r} once"
    path.write_text(text.replace(old, new))
    return chart


# Template edits that break the wiring, each with what the run must then report.
BREAKAGES = [
    pytest.param(
        "defaults",
        "_training.tpl",
        'mountPath: {{ include "iris.modelsMountPath" . }}',
        "mountPath: /srv/models",
        "training Job exited 5",
        id="the Job mounts the models elsewhere",
    ),
    pytest.param(
        "defaults",
        "predictor-deployment.yaml",
        'mountPath: {{ include "iris.modelsMountPath" . }}',
        "mountPath: /srv/models",
        "readiness probe GET /v1/models/iris",
        id="the predictors mount the models elsewhere and never become ready",
    ),
    pytest.param(
        "defaults",
        "predictor-deployment.yaml",
        "- name: http",
        "- name: web",
        "has no port named 'http'",
        id="a renamed port leaves the probes and the Service unresolved",
    ),
    pytest.param(
        "minio",
        "minio.yaml",
        "key: {{ .Values.storage.s3.secretAccessKeyKey }}",
        "key: {{ .Values.storage.s3.accessKeyIdKey }}",
        "training Job exited 5",
        id="MinIO keyed from the wrong Secret key refuses the Job",
    ),
]


@pytest.mark.parametrize(("mode", "template", "old", "new", "reported"), BREAKAGES)
def test_a_template_that_breaks_the_wiring_fails_the_run(
    cluster: Cluster,
    tmp_path: Path,
    mode: str,
    template: str,
    old: str,
    new: str,
    reported: str,
) -> None:
    chart = broken_chart(tmp_path, template, old, new)
    with pytest.raises(NotConformant, match=re.escape(reported)):
        conformance.start(cluster, render(MODES[mode].values, chart=chart))
