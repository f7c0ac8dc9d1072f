"""Upgrades and GitOps: what `helm upgrade` reruns, and what Argo CD renders.

Argo CD renders with `helm template`, where `lookup` finds nothing and every render
is revision 1, then applies the result on each sync; it can only converge if the same
values always render the same bytes.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import (
    CHART,
    MODES,
    MONITORING_APIS,
    NAMESPACE,
    RELEASE,
    helm,
    render,
)

GITOPS_VALUES = CHART / "ci" / "gitops-values.yaml"


def argo_render(values_file: Path | None = None, **values: Any) -> str:
    """`helm template` as Argo CD runs it: the cluster's version and APIs only."""
    arguments = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    arguments += ["--kube-version", "1.29.0", "--include-crds"]
    for api in MONITORING_APIS:
        arguments += ["--api-versions", api]
    if values_file is not None:
        arguments += ["--values", str(values_file)]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        return helm(*arguments, "--values", str(path))


def job_name(values: Mapping[str, Any]) -> str:
    return str(render(values).training_job()["metadata"]["name"])


def with_change(path: str, value: Any) -> dict[str, Any]:
    keys = path.split(".")
    values: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        values = {key: values}
    return values


def test_the_gitops_values_render_the_same_bytes_every_time() -> None:
    first = argo_render(GITOPS_VALUES)
    assert argo_render(GITOPS_VALUES) == first
    kinds = {each["kind"] for each in yaml.safe_load_all(first) if each}
    assert {"ServiceMonitor", "PrometheusRule", "Job"} <= kinds
    assert "Secret" not in kinds


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_renders_the_same_bytes(mode: str) -> None:
    # The bundled MinIO's included: its keys are made in the cluster, not rendered.
    values = dict(MODES[mode].values)
    assert argo_render(**values) == argo_render(**values)


@pytest.mark.parametrize(
    "setting",
    [
        "predictor.settings.logLevel",
        "predictor.settings.reloadIntervalSeconds",
        "predictor.replicaCount",
        "service.type",
        "autoscaling.maxReplicas",
    ],
)
def test_an_upgrade_that_does_not_touch_training_keeps_the_job(setting: str) -> None:
    changed = {
        "predictor.settings.logLevel": "DEBUG",
        "predictor.settings.reloadIntervalSeconds": 30,
        "predictor.replicaCount": 3,
        "service.type": "NodePort",
        "autoscaling.maxReplicas": 9,
    }[setting]
    assert job_name(with_change(setting, changed)) == job_name({})


@pytest.mark.parametrize(
    ("setting", "changed"),
    [
        ("image.tag", "0.2.0"),
        ("image.repository", "registry.example/iris"),
        ("training.settings.nEstimators", 80),
        ("training.settings.minAccuracy", 0.95),
        ("training.resources.limits.memory", "1Gi"),
    ],
)
def test_an_upgrade_that_changes_what_trains_runs_a_new_job(
    setting: str, changed: Any
) -> None:
    assert job_name(with_change(setting, changed)) != job_name({})


def test_no_template_names_anything_after_the_release_revision() -> None:
    # helm template renders every revision as 1: a name from it never changes under
    # Argo CD, so a changed Job would be patched, and a Job's template is immutable.
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            assert ".Release.Revision" not in template.read_text(), template.name


def test_a_finished_job_is_kept_unless_a_ttl_is_asked_for() -> None:
    # A TTL deletes the Job; Argo CD then sees it missing and recreates it: a retrain
    # on every sync.
    assert "ttlSecondsAfterFinished" not in render().training_job()["spec"]
    job = render({"training": {"ttlSecondsAfterFinished": 3600}}).training_job()
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_the_gitops_install_is_documented_with_its_values_file() -> None:
    readme = (CHART / "README.md").read_text().replace("\\\n", " ")
    (command,) = re.findall(r"helm template .*--api-versions.*", readme)
    assert "--values charts/iris/ci/gitops-values.yaml" in command
