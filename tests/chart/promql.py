"""PromQL as Prometheus parses it (promql-parser, Prometheus' grammar in Rust): the
series an expression selects, and the metric names the predictor exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser

from tests.chart.render import CHART, MODES, Manifests

# Grafana's variables, each replaced by a value of the same PromQL type.
_GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
_GRAFANA_VARIABLES = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?")


@dataclass(frozen=True)
class Selector:
    """One vector selector: a metric name and its label matchers (label, op, value)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def label(self, label: str) -> tuple[str, str] | None:
        for name, op, value in self.matchers:
            if name == label:
                return op, value
        return None


def _children(node: Any) -> Iterator[Any]:
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, int | float | str):
            yield child
    yield from getattr(node, "args", None) or []


def selectors(expression: str) -> list[Selector]:
    """Every vector selector of an expression; a ValueError if it does not parse."""
    found = []
    pending = [promql_parser.parse(expression)]
    while pending:
        node = pending.pop()
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple(
                (m.name, str(m.op).rpartition(".")[2], m.value)
                for m in node.matchers.matchers
            )
            name = node.name or dict((n, v) for n, _, v in matchers).get("__name__", "")
            found.append(Selector(name, matchers))
        pending.extend(_children(node))
    return found


def metric_names(expression: str) -> set[str]:
    return {selector.name for selector in selectors(expression)}


def from_grafana(expression: str) -> str:
    """A Grafana query as the PromQL Grafana sends: ranges and variables filled in."""
    expression = _GRAFANA_RANGES.sub("5m", expression)
    return _GRAFANA_VARIABLES.sub(lambda match: f"grafana-{match.group(1)}", expression)


def grafana_interpolate(
    expression: str,
    variables: dict[str, str],
    scrape_interval_seconds: int,
    interval_seconds: int,
) -> str:
    """A query as Grafana sends it to Prometheus, with real durations and values.

    Grafana's $__rate_interval is max($__interval + scrape interval, 4 * scrape
    interval), the scrape interval being the data source's setting (grafana/grafana
    pull 77234; grafana.com/docs/grafana/latest/datasources/prometheus/
    template-variables); $__interval is the panel's step, at least that setting.
    Single-valued variables are put in as they are, $name or ${name}.
    """
    rate_interval = max(
        interval_seconds + scrape_interval_seconds, 4 * scrape_interval_seconds
    )
    durations = {
        "rate_interval": f"{rate_interval}s",
        "interval": f"{interval_seconds}s",
        "range": "1h",
    }
    expression = _GRAFANA_RANGES.sub(
        lambda match: durations[match.group(1)], expression
    )
    return _GRAFANA_VARIABLES.sub(lambda match: variables[match.group(1)], expression)


def alerting_rules(manifests: Manifests) -> list[dict[str, Any]]:
    rule = manifests.get("PrometheusRule")
    return [each for group in rule["spec"]["groups"] for each in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (CHART / "dashboards" / "iris.json").read_text()
    )
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) of every panel's targets."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def monitored_names() -> set[str]:
    """Every series name the chart's alerts and dashboard query."""
    queries = [rule["expr"] for rule in alerting_rules(MODES["monitoring-on"].render())]
    queries += [from_grafana(query) for _, query in dashboard_queries()]
    return set().union(*(metric_names(query) for query in queries))


def exposed_names(exposition: str) -> set[str]:
    """The sample names in a Prometheus text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def declared_names() -> set[str]:
    """The sample names the predictor process can expose: its metrics, KServe's and
    prometheus_client's defaults, as declared in the registry (a labelled metric has
    no samples before its first use, but its type fixes its sample names)."""
    from kserve import metrics as kserve_metrics  # noqa: F401 - registers histograms
    from prometheus_client import REGISTRY

    from predictor.drift import drift_window
    from predictor.metrics import prediction_stats

    prediction_stats("iris")
    drift_window("iris", 10)
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "info": ["_info"],
        "gauge": [""],
        "summary": ["_sum", "_count", ""],
    }
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, [""])
    }
