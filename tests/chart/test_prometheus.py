"""The chart's alerts and dashboard as a real Prometheus runs them.

promtool checks the rendered PrometheusRule and unit-tests every alert on a faulty and
a healthy series; then a Prometheus, configured with the chart's documented scrape
job, scrapes a running predictor while the test sends it traffic, and answers every
dashboard query and the drift alerts' expressions.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from numpy.typing import NDArray

from tests.api.conftest import JSON, PredictorProcess, send
from tests.chart.prometheus import (
    Prometheus,
    finite,
    promtool,
    running_prometheus,
    write_yaml,
)
from tests.chart.promql import alerting_rules, dashboard, grafana_interpolate
from tests.chart.render import CHART, MODES, NAMESPACE, RELEASE, Manifests, render
from training.store import open_store
from training.train import TrainedModel

MONITORING_ON = MODES["monitoring-on"]
# The Service's name: the job label the ServiceMonitor gives and the rules select.
JOB = RELEASE
SCRAPE_INTERVAL_SECONDS = 1


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered PrometheusRule's groups, as a Prometheus rule file."""
    rule = MONITORING_ON.render().get("PrometheusRule")
    directory = tmp_path_factory.mktemp("rules")
    return write_yaml(directory / "rules.yaml", {"groups": rule["spec"]["groups"]})


@pytest.fixture(scope="module")
def unannotated_rule_file(rule_file: Path) -> Path:
    """The same rules without annotations, which promtool's unit tests would compare
    word for word (promtool check rules has checked their templates)."""
    groups = yaml.safe_load(rule_file.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return write_yaml(rule_file.with_name("unannotated.yaml"), {"groups": groups})


def test_promtool_accepts_the_rendered_rules(rule_file: Path) -> None:
    checked = promtool("check", "rules", str(rule_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", checked.stdout)
    assert found is not None, checked.stdout
    assert int(found.group(1)) == len(alerting_rules(MONITORING_ON.render()))


def test_promtool_refuses_a_rule_that_does_not_parse(tmp_path: Path) -> None:
    broken = {"alert": "Broken", "expr": "sum(rate(iris_http_requests_total[5m])"}
    rules = write_yaml(
        tmp_path / "rules.yaml", {"groups": [{"name": "g", "rules": [broken]}]}
    )
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode != 0
    assert "unclosed left parenthesis" in checked.stdout + checked.stderr


def series(name: str, **labels: str) -> str:
    """A series as the chart's ServiceMonitor scrapes it: job and namespace set."""
    merged = {"job": JOB, "namespace": NAMESPACE, **labels}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in merged.items()) + "}"


PREDICT = {"route": "/v1/models/{model}:predict"}
IRIS = {"model_name": "iris"}
WHERE = {"job": JOB, "namespace": NAMESPACE}


@dataclass(frozen=True)
class AlertCase:
    """Series on which an alert fires with these labels, and on which it must not."""

    faulty: dict[str, str]
    fires_with: list[dict[str, str]]
    healthy: dict[str, str]
    severity: str = "warning"
    eval_time: str = "30m"


REQUESTS = "iris_http_requests_total"
DURATION = "iris_http_request_duration_seconds_bucket"
PSI = "iris_feature_drift_psi"
KS = "iris_feature_drift_ks"
ROWS = "iris_drift_window_rows"
CONFIDENCE = "iris_prediction_confidence_ratio"


def _latency(fast: str, slow: str) -> dict[str, str]:
    return {
        series(DURATION, **PREDICT, le="0.1"): fast,
        series(DURATION, **PREDICT, le="1"): slow,
        series(DURATION, **PREDICT, le="+Inf"): slow,
    }


# Values in promtool's notation, one sample a minute: "0+100x40" counts up by 100.
ALERT_CASES: dict[str, AlertCase] = {
    "IrisPredictorDown": AlertCase(
        # absent() of a comparison, not of a bare selector, keeps no labels.
        faulty={series("up", instance="a"): "0x40"},
        fires_with=[{}],
        healthy={series("up", instance="a"): "1x40"},
        severity="critical",
    ),
    "IrisModelNotLoaded": AlertCase(
        faulty={series("iris_model_ready", **IRIS, instance="a"): "0x40"},
        fires_with=[{}],
        healthy={series("iris_model_ready", **IRIS, instance="a"): "1x40"},
        severity="critical",
    ),
    "IrisHighErrorRatio": AlertCase(
        faulty={
            series(REQUESTS, **PREDICT, code="200"): "0+100x40",
            series(REQUESTS, **PREDICT, code="500"): "0+20x40",
        },
        fires_with=[{}],
        healthy={
            series(REQUESTS, **PREDICT, code="200"): "0+100x40",
            series(REQUESTS, **PREDICT, code="500"): "0+1x40",
        },
    ),
    "IrisHighPredictLatency": AlertCase(
        faulty=_latency(fast="0x40", slow="0+100x40"),
        fires_with=[{}],
        healthy=_latency(fast="0+100x40", slow="0+100x40"),
    ),
    "IrisModelReloadFailing": AlertCase(
        faulty={
            series("iris_model_reloads_total", **IRIS, result="failure", pod="p"): (
                "0x20 1x20"
            )
        },
        fires_with=[{"namespace": NAMESPACE, "pod": "p"}],
        healthy={
            series("iris_model_reloads_total", **IRIS, result="failure", pod="p"): (
                "0x40"
            )
        },
    ),
    "IrisModelTooOld": AlertCase(
        # promtool's clock starts at 0: a model trained 35 days before it.
        faulty={series("iris_model_trained_timestamp_seconds", **IRIS): "-3024000x200"},
        fires_with=[{}],
        healthy={series("iris_model_trained_timestamp_seconds", **IRIS): "0x200"},
        severity="info",
        eval_time="2h",
    ),
    "IrisFeatureDrift": AlertCase(
        faulty={
            series(ROWS, **IRIS, instance="a"): "1000x40",
            series(PSI, **IRIS, instance="a", feature="petal_length"): "0.8x40",
            series(KS, **IRIS, instance="a", feature="petal_length"): "0.1x40",
            series(PSI, **IRIS, instance="a", feature="sepal_width"): "0.05x40",
            series(KS, **IRIS, instance="a", feature="sepal_width"): "0.5x40",
        },
        fires_with=[
            {**WHERE, **IRIS, "feature": "petal_length", "score": "psi"},
            {**WHERE, **IRIS, "feature": "sepal_width", "score": "ks"},
        ],
        # The same scores from a replica whose window is nearly empty stay quiet;
        # a full one's are low.
        healthy={
            series(ROWS, **IRIS, instance="a"): "100x40",
            series(PSI, **IRIS, instance="a", feature="petal_length"): "0.8x40",
            series(KS, **IRIS, instance="a", feature="sepal_width"): "0.5x40",
            series(ROWS, **IRIS, instance="b"): "1000x40",
            series(PSI, **IRIS, instance="b", feature="petal_length"): "0.05x40",
            series(KS, **IRIS, instance="b", feature="sepal_width"): "0.05x40",
        },
    ),
    "IrisPredictionDrift": AlertCase(
        faulty={
            series(ROWS, **IRIS, instance="a"): "1000x40",
            series("iris_prediction_drift_psi", **IRIS, instance="a"): "0.6x40",
        },
        fires_with=[{**WHERE, **IRIS}],
        healthy={
            series(ROWS, **IRIS, instance="a"): "1000x40",
            series("iris_prediction_drift_psi", **IRIS, instance="a"): "0.02x40",
        },
    ),
    "IrisConfidenceCollapse": AlertCase(
        faulty={
            series(f"{CONFIDENCE}_bucket", **IRIS, le="0.6"): "0+40x40",
            series(f"{CONFIDENCE}_count", **IRIS): "0+100x40",
        },
        fires_with=[WHERE],
        healthy={
            series(f"{CONFIDENCE}_bucket", **IRIS, le="0.6"): "0+5x40",
            series(f"{CONFIDENCE}_count", **IRIS): "0+100x40",
        },
    ),
}


def test_every_alert_has_a_promtool_test() -> None:
    rendered = [rule["alert"] for rule in alerting_rules(MONITORING_ON.render())]
    assert sorted(ALERT_CASES) == sorted(rendered)


def _promtool_test(
    name: str, values: dict[str, str], fires_with: list[dict[str, str]], case: AlertCase
) -> dict[str, Any]:
    labels = {"severity": case.severity, "team": "ml"}
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in values.items()],
        "alert_rule_test": [
            {
                "eval_time": case.eval_time,
                "alertname": name,
                "exp_alerts": [
                    {"exp_labels": {**each, **labels}} for each in fires_with
                ],
            }
        ],
    }


@pytest.mark.parametrize("name", sorted(ALERT_CASES))
def test_promtool_fires_on_faulty_series_and_not_on_healthy_ones(
    name: str, unannotated_rule_file: Path, tmp_path: Path
) -> None:
    case = ALERT_CASES[name]
    tests = write_yaml(
        tmp_path / "tests.yaml",
        {
            "rule_files": [str(unannotated_rule_file)],
            "evaluation_interval": "1m",
            "tests": [
                _promtool_test(name, case.faulty, case.fires_with, case),
                _promtool_test(name, case.healthy, [], case),
            ],
        },
    )
    done = promtool("test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr


# A running predictor scraped by a real Prometheus.


@dataclass(frozen=True)
class Stack:
    predictor: PredictorProcess
    prometheus: Prometheus
    training_rows: NDArray[np.float64]
    rules: dict[str, dict[str, Any]]


def scrape_job(manifests: Manifests, port: int, targets: Path) -> dict[str, Any]:
    """The chart's documented scrape job, finding the rendered pod through a file.

    kubernetes_sd_configs needs an API server; a file gives Prometheus the same
    __meta_kubernetes_* labels it would find for the rendered pod, and the job's
    relabelling is the documented one, unchanged.
    """
    job: dict[str, Any] = yaml.safe_load((CHART / "scrape-config.yaml").read_text())
    deployment = manifests.get("Deployment", RELEASE)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    labels = {
        "__meta_kubernetes_namespace": deployment["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": f"{RELEASE}-5d8f7b9c6-x2k4q",
    }
    for key, value in annotations.items():
        labels[
            f"__meta_kubernetes_pod_annotation_{re.sub(r'[^a-zA-Z0-9]', '_', key)}"
        ] = value
    # The pod's IP without a port, as for a pod that declares none: the annotation
    # must supply it.
    targets.write_text(json.dumps([{"targets": ["127.0.0.1"], "labels": labels}]))
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(targets)]}]
    assert annotations["prometheus.io/port"] == str(port)
    return job


@pytest.fixture(scope="module")
def stack(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    models = tmp_path_factory.mktemp("models")
    open_store(str(models)).publish(trained.estimator, trained.card, 5)
    directory = tmp_path_factory.mktemp("prometheus")
    predictor = PredictorProcess(
        directory / "predictor.log", "--model_uri", str(models)
    )
    try:
        predictor.wait_until("/v1/models/iris", 200)
        values = {
            "metrics": {
                **MONITORING_ON.values["metrics"],
                "scrapeAnnotations": True,
            },
            "predictor": {"containerPort": predictor.port},
        }
        manifests = render(values)
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            },
            "scrape_configs": [
                scrape_job(manifests, predictor.port, directory / "targets.json")
            ],
        }
        rules = {rule["alert"]: rule for rule in alerting_rules(manifests)}
        with running_prometheus(config, directory) as prometheus:
            prometheus.wait_for(f'up{{job="{JOB}"}} == 1')
            yield Stack(predictor, prometheus, trained.split.x_train, rules)
    finally:
        predictor.stop()


def post_rows(
    connection: http.client.HTTPConnection, rows: NDArray[np.float64]
) -> None:
    status, body = send(
        connection,
        "POST",
        "/v1/models/iris:predict",
        {"instances": rows.tolist()},
        JSON,
    )
    assert status == 200, body


def send_rows(stack: Stack, rows: NDArray[np.float64], batch: int = 100) -> float:
    """Post the rows in batches; the Unix time after the last answer."""
    connection = stack.predictor.connection()
    try:
        for start in range(0, len(rows), batch):
            post_rows(connection, rows[start : start + batch])
    finally:
        connection.close()
    return time.time()


def training_like(stack: Stack, count: int, seed: int) -> NDArray[np.float64]:
    """Rows drawn from the training rows."""
    rng = np.random.default_rng(seed)
    return stack.training_rows[rng.integers(0, len(stack.training_rows), count)]


def drifted(stack: Stack, count: int, seed: int) -> NDArray[np.float64]:
    """Rows past every feature's training max, yet inside the schema's accepted range.

    The accepted range widens the training range by half of it on each side (the
    default feature margin), so 10% to 40% of the range past the max is accepted.
    """
    rng = np.random.default_rng(seed)
    rows = stack.training_rows
    spread = np.ptp(rows, axis=0)
    offsets = rng.uniform(0.1, 0.4, size=(count, rows.shape[1])) * spread
    return np.asarray(rows.max(axis=0) + offsets, dtype=np.float64)


def test_the_documented_scrape_job_finds_the_annotated_predictor(stack: Stack) -> None:
    (target,) = stack.prometheus.targets()
    assert target["health"] == "up", target
    assert target["labels"]["job"] == JOB
    assert target["labels"]["namespace"] == NAMESPACE
    assert target["labels"]["pod"] == f"{RELEASE}-5d8f7b9c6-x2k4q"
    assert target["scrapeUrl"] == f"http://127.0.0.1:{stack.predictor.port}/metrics"


def test_every_dashboard_query_returns_data_under_traffic(stack: Stack) -> None:
    prometheus = stack.prometheus
    # Grafana's label_values(...) variables, as Grafana asks Prometheus for them.
    assert prometheus.label_values("namespace", "iris_model_ready") == [NAMESPACE]
    assert prometheus.label_values(
        "job", f'iris_model_ready{{namespace="{NAMESPACE}"}}'
    ) == [JOB]
    variables = {"namespace": NAMESPACE, "job": JOB}
    stop = threading.Event()

    def traffic() -> None:
        """10-row requests, about 50 a second, until stopped or for 60 s at most."""
        connection = stack.predictor.connection()
        rows = training_like(stack, 1000, seed=1)
        deadline = time.monotonic() + 60
        try:
            for start in itertools.cycle(range(0, len(rows), 10)):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                post_rows(connection, rows[start : start + 10])
                time.sleep(0.02)
        finally:
            connection.close()

    sender = threading.Thread(target=traffic)
    started = time.time()
    sender.start()
    try:
        # A panel showing the last hour is about 1000 points wide: its step rounds
        # up to the data source's scrape interval, so $__interval is that interval.
        interval = SCRAPE_INTERVAL_SECONDS
        rate_window = max(
            interval + SCRAPE_INTERVAL_SECONDS, 4 * SCRAPE_INTERVAL_SECONDS
        )
        prometheus.wait_for_scrape_after(started + rate_window, JOB)
        empty = []
        panels = dashboard()["panels"]
        for panel in panels:
            for target in panel["targets"]:
                query = grafana_interpolate(
                    target["expr"], variables, SCRAPE_INTERVAL_SECONDS, interval
                )
                if not finite(prometheus.query(query)):
                    empty.append((panel["title"], query))
    finally:
        stop.set()
        sender.join(timeout=30)
    assert not empty, f"panels without data: {empty}"
    assert len(panels) >= 16


def window_rows(stack: Stack) -> float:
    (sample,) = stack.prometheus.query(f'iris_drift_window_rows{{job="{JOB}"}}')
    return float(sample["value"])


def test_training_traffic_keeps_the_drift_alerts_quiet(stack: Stack) -> None:
    done = send_rows(stack, training_like(stack, 1000, seed=2))
    stack.prometheus.wait_for_scrape_after(done, JOB)
    # A full window: the alerts are quiet because of the scores, not their gate.
    assert window_rows(stack) == 1000
    for alert in ("IrisFeatureDrift", "IrisPredictionDrift"):
        assert stack.prometheus.query(stack.rules[alert]["expr"]) == [], alert


def test_drifted_traffic_makes_the_drift_alerts_true(stack: Stack) -> None:
    done = send_rows(stack, drifted(stack, 1000, seed=3))
    stack.prometheus.wait_for_scrape_after(done, JOB)
    assert window_rows(stack) == 1000
    firing = stack.prometheus.query(stack.rules["IrisFeatureDrift"]["expr"])
    assert {
        (each["metric"]["feature"], each["metric"]["score"]) for each in firing
    } == {
        (feature, score)
        for feature in ("sepal_length", "sepal_width", "petal_length", "petal_width")
        for score in ("psi", "ks")
    }
    (prediction,) = stack.prometheus.query(stack.rules["IrisPredictionDrift"]["expr"])
    assert prediction["metric"] == {**WHERE, **IRIS}
