"""The ServiceMonitor, the alerts and the dashboard: valid PromQL, on metrics the
predictor exposes, selecting the series the ServiceMonitor's scrapes produce."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from predictor.routes import OTHER, ROUTE_LABELS
from tests.chart.promql import (
    alerting_rules,
    dashboard,
    dashboard_queries,
    declared_names,
    from_grafana,
    metric_names,
    selectors,
)
from tests.chart.render import MODES, NAMESPACE, RELEASE, default_values, render

# Prometheus' own series, beside what the predictor exposes.
PROMETHEUS_NAMES = {"up"}
MONITORED = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    }
}


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    return declared_names() | PROMETHEUS_NAMES


def test_the_alerts_are_the_ones_the_chart_promises() -> None:
    names = [each["alert"] for each in alerting_rules(MODES["monitoring-on"].render())]
    assert names == [
        "IrisPredictorDown",
        "IrisModelNotLoaded",
        "IrisHighErrorRatio",
        "IrisHighPredictLatency",
        "IrisModelReloadFailing",
        "IrisModelTooOld",
        "IrisFeatureDrift",
        "IrisPredictionDrift",
        "IrisConfidenceCollapse",
    ]


def test_every_alert_parses_and_uses_only_exposed_metrics(exposed: set[str]) -> None:
    for rule in alerting_rules(MODES["monitoring-on"].render()):
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exposed, f"{rule['alert']} uses {used - exposed}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["labels"]["team"] == "ml"
        assert rule["annotations"]["summary"]


def test_alerts_select_the_series_the_service_monitor_scrapes() -> None:
    manifests = MODES["monitoring-on"].render()
    service = manifests.get("ServiceMonitor")
    # Without a jobLabel, the prometheus-operator names the job after the Service.
    assert "jobLabel" not in service["spec"]
    job = manifests.get("Service", RELEASE)["metadata"]["name"]
    for rule in alerting_rules(manifests):
        for selector in selectors(rule["expr"]):
            assert selector.label("job") == ("Equal", job), rule["alert"]
            assert selector.label("namespace") == ("Equal", NAMESPACE), rule["alert"]


def test_inference_routes_filter_matches_only_prediction_routes() -> None:
    manifests = MODES["monitoring-on"].render()
    routes = {label.name for label in (*ROUTE_LABELS, OTHER)}
    for rule in alerting_rules(manifests):
        for selector in selectors(rule["expr"]):
            matcher = selector.label("route")
            if matcher is None:
                continue
            op, pattern = matcher
            assert op == "Re"
            # Prometheus anchors a regular expression at both ends.
            matched = {route for route in routes if re.fullmatch(pattern, route)}
            assert matched == {label.name for label in ROUTE_LABELS if label.inference}


def test_thresholds_come_from_values() -> None:
    manifests = render(
        {
            "metrics": {
                **MONITORED["metrics"],
                "prometheusRule": {
                    "enabled": True,
                    "errorRatio": 0.02,
                    "latencyP99Seconds": 0.25,
                    "modelMaxAgeSeconds": 86400,
                    "downFor": "2m",
                },
            }
        }
    )
    by_name = {each["alert"]: each for each in alerting_rules(manifests)}
    assert by_name["IrisHighErrorRatio"]["expr"].endswith("> 0.02")
    assert by_name["IrisHighPredictLatency"]["expr"].endswith("> 0.25")
    assert by_name["IrisModelTooOld"]["expr"].endswith("> 86400")
    assert by_name["IrisPredictorDown"]["for"] == "2m"


def test_the_service_monitor_scrapes_metrics_on_the_named_port() -> None:
    manifests = MODES["monitoring-on"].render()
    (endpoint,) = manifests.get("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert (
        manifests.get("ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    )
    assert (
        manifests.get("PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"
    )


def test_the_dashboard_configmap_is_the_dashboard_file_for_the_sidecar() -> None:
    config_map = MODES["defaults"].render().get("ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["iris.json"]) == dashboard()


def test_every_dashboard_query_parses_and_uses_only_exposed_metrics(
    exposed: set[str],
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    for title, query in queries:
        used = metric_names(from_grafana(query))
        assert used, title
        assert used <= exposed, f"panel {title!r} uses {used - exposed}"
        for selector in selectors(from_grafana(query)):
            if selector.name in exposed - PROMETHEUS_NAMES:
                assert selector.label("namespace") == ("Equal", "grafana-namespace")
                assert selector.label("job") == ("Equal", "grafana-job")


def test_the_dashboard_shows_what_the_chart_promises() -> None:
    used = set().union(*(metric_names(from_grafana(q)) for _, q in dashboard_queries()))
    assert {
        "iris_http_requests_total",
        "iris_http_request_duration_seconds_bucket",
        "iris_predictions_total",
        "iris_prediction_confidence_ratio_bucket",
        "iris_feature_value_centimeters_sum",
        "iris_feature_value_centimeters_count",
        "iris_model_training_feature_mean_centimeters",
        "iris_model_info",
        "request_predict_seconds_bucket",
    } <= used
    variables = {v["name"] for v in dashboard()["templating"]["list"]}
    assert variables == {"datasource", "namespace", "job"}
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<series selector>, <label>)
            query = re.fullmatch(
                r"label_values\((.+), *(\w+)\)", variable["query"]["query"]
            )
            assert query is not None, variable["name"]
            assert metric_names(from_grafana(query.group(1))) <= declared_names()


def test_promql_that_does_not_parse_is_caught() -> None:
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        metric_names("sum(rate(iris_http_requests_total[5m])")


def test_drift_thresholds_and_durations_come_from_values() -> None:
    manifests = render(
        {
            "metrics": {
                **MONITORED["metrics"],
                "prometheusRule": {
                    "enabled": True,
                    "drift": {
                        "minWindowRows": 200,
                        "featurePsi": 0.4,
                        "featureKs": 0.35,
                        "predictionPsi": 0.3,
                        "for": "5m",
                    },
                    "confidenceCollapse": {
                        "lowConfidence": 0.7,
                        "ratio": 0.1,
                        "for": "20m",
                    },
                },
            }
        }
    )
    by_name = {each["alert"]: each for each in alerting_rules(manifests)}
    feature, prediction = by_name["IrisFeatureDrift"], by_name["IrisPredictionDrift"]
    assert "> 0.4," in feature["expr"]
    assert "> 0.35," in feature["expr"]
    assert prediction["expr"].endswith("> 0.3")
    for rule in (feature, prediction):
        assert rule["expr"].count(">= 200)") == rule["expr"].count("iris_drift_window")
        assert rule["for"] == "5m"
    collapse = by_name["IrisConfidenceCollapse"]
    assert 'le="0.7"' in collapse["expr"]
    assert collapse["expr"].endswith("> 0.1")
    assert collapse["for"] == "20m"


def thresholds(title: str) -> list[float]:
    (panel,) = [each for each in dashboard()["panels"] if each["title"] == title]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line", title
    steps = defaults["thresholds"]["steps"]
    return [step["value"] for step in steps if step["value"] is not None]


def test_the_drift_panels_draw_the_alerts_default_thresholds() -> None:
    rule = default_values()["metrics"]["prometheusRule"]
    drift, collapse = rule["drift"], rule["confidenceCollapse"]
    assert drift["featurePsi"] in thresholds("Feature drift: PSI")
    assert thresholds("Feature drift: KS statistic") == [drift["featureKs"]]
    assert drift["predictionPsi"] in thresholds("Prediction drift: class PSI")
    assert thresholds("Drift window rows") == [drift["minWindowRows"]]
    assert thresholds("Unsure predictions") == [collapse["ratio"]]
    (unsure,) = [
        query for title, query in dashboard_queries() if title == "Unsure predictions"
    ]
    assert f'le="{collapse["lowConfidence"]}"' in unsure


def test_the_dashboard_file_imports_into_grafana_with_a_datasource_input() -> None:
    board = dashboard()
    (source,) = board["__inputs"]
    assert source["type"] == "datasource"
    assert source["pluginId"] == "prometheus"
    # Grafana's importer asks for each input and replaces ${NAME} throughout.
    text = json.dumps(board)
    assert set(re.findall(r"\$\{(DS_[A-Z0-9_]+)\}", text)) == {source["name"]}
    (variable,) = [
        each for each in board["templating"]["list"] if each["type"] == "datasource"
    ]
    assert variable["current"]["value"] == f"${{{source['name']}}}"
    assert variable["query"] == source["pluginId"]
    # An import makes a new dashboard: no database id, a fixed uid.
    assert board.get("id") is None
    assert board["uid"]
    required = {(each["type"], each["id"]) for each in board["__requires"]}
    assert ("datasource", "prometheus") in required
    assert {("panel", panel["type"]) for panel in board["panels"]} <= required
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_scrape_annotations_are_off_by_default_and_name_the_port_and_job() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        deployment = render(values).get("Deployment", RELEASE)
        found: dict[str, str] = deployment["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
        return found

    assert not any(key.startswith("prometheus.io/") for key in annotations({}))
    manifests = render({})
    on = annotations({"metrics": {"scrapeAnnotations": True}})
    assert on == {
        "prometheus.io/scrape": "true",
        "prometheus.io/path": "/metrics",
        "prometheus.io/port": "8080",
        "prometheus.io/job": manifests.get("Service", RELEASE)["metadata"]["name"],
    }
    kept = annotations(
        {
            "metrics": {"scrapeAnnotations": True},
            "predictor": {"podAnnotations": {"team": "ml"}},
        }
    )
    assert kept == {**on, "team": "ml"}
