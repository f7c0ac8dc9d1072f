"""A rollback on a cluster is one command: `helm upgrade --reuse-values --set-string
training.rollback.to=VERSION` renders a Job that is the training Job's pod running
`python -m training rollback`. Checked on the rendered objects in every storage mode,
and run: two versions published by the rendered training Job, then the rendered
rollback pod moves the pointer back."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest

from tests.chart import conformance
from tests.chart.conformance import run_training
from tests.chart.pods import describe, pod_spec_of
from tests.chart.render import MODES, RELEASE, HelmError, Manifest, Manifests, render
from tests.chart.sandbox import Cluster
from training.store import open_store

VERSION = "20260101T000000000000Z-abcdef"
REASON = "accuracy dropped on live traffic"
STORAGE_MODES = [
    "defaults",
    "pvc-existing-claim",
    "s3-external",
    "s3-workload-identity",
    "s3-read-only-predictors",
    "minio",
]


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def rollback_values(to: str, reason: str = REASON) -> dict[str, Any]:
    return {"training": {"rollback": {"to": to, "reason": reason}}}


def jobs(manifests: Manifests) -> dict[str, Manifest]:
    return {
        each["spec"]["template"]["spec"]["containers"][0]["name"]: each
        for each in manifests.of_kind("Job")
    }


def test_no_rollback_job_unless_a_version_is_named() -> None:
    assert set(jobs(render())) == {"train"}


@pytest.mark.parametrize("mode", STORAGE_MODES)
def test_the_rollback_job_is_the_training_pod_running_rollback(mode: str) -> None:
    plain = MODES[mode].render()
    manifests = render(merged(MODES[mode].values, rollback_values(VERSION)))
    found = jobs(manifests)
    # With the bundled MinIO, its keys Job ("keys") renders too.
    assert set(found) - {"keys"} == {"train", "rollback"}
    # Setting a rollback does not retrain: the training Job is the same object.
    assert found["train"] == plain.training_job()
    train, rollback = found["train"], found["rollback"]
    train_pod = train["spec"]["template"]
    rollback_pod = copy.deepcopy(rollback["spec"]["template"])
    container = rollback_pod["spec"]["containers"][0]
    assert container.pop("args") == ["rollback", "--to", VERSION, "--reason", REASON]
    container["name"] = "train"
    # The same ServiceAccount, env (store URI and write keys), volumes and security.
    assert rollback_pod == train_pod
    assert rollback["metadata"]["labels"] == train["metadata"]["labels"]
    rules = rollback["spec"]["podFailurePolicy"]["rules"]
    assert rules[1]["onExitCodes"] == {
        "containerName": "rollback",
        "operator": "In",
        "values": [2, 7],
    }
    pod_spec_of(rollback)


def test_each_target_and_reason_is_its_own_job() -> None:
    names = {
        jobs(render(rollback_values(to, reason)))["rollback"]["metadata"]["name"]
        for to, reason in [(VERSION, "a"), (VERSION, "b"), (VERSION[:-1] + "0", "a")]
    }
    assert len(names) == 3
    assert all(name.startswith(f"{RELEASE}-rollback-") for name in names)
    assert all(len(name) <= 63 for name in names)


def test_a_malformed_version_is_refused_before_anything_runs() -> None:
    with pytest.raises(HelmError, match="/training/rollback/to': 'latest' does not"):
        render(rollback_values("latest"))


def test_a_rollback_without_the_training_job_is_refused() -> None:
    values = merged(rollback_values(VERSION), {"training": {"enabled": False}})
    with pytest.raises(HelmError, match=r"training\.rollback\.to needs training"):
        render(values)


@pytest.mark.timeout(240)
def test_the_rendered_rollback_pod_moves_the_pointer_back(cluster: Cluster) -> None:
    first_render = render()
    conformance.preflight(first_render)
    cluster.add_services(first_render)
    job = run_training(cluster, first_render)
    (claim,) = job.pod.claims()
    store = open_store(str(cluster.workdir / "claims" / claim))
    first = store.read_pointer()
    assert first is not None, job.log()
    # A second version: the gate would keep the first, so force it.
    run_training(cluster, render({"training": {"settings": {"force": True}}}))
    second = store.read_pointer()
    assert second is not None
    assert second.version != first.version

    manifests = render(rollback_values(first.version))
    workload = jobs(manifests)["rollback"]
    pod = describe(workload, manifests, name=f"{RELEASE}-rollback-0")
    running = cluster.start(pod, pod.container(), cluster.add_pod_network())
    try:
        status = running.process.wait(timeout=conformance.JOB_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the rollback Job ran over {conformance.JOB_SECONDS}s")
    assert status == 0, running.log()
    current = store.read_pointer()
    assert current is not None
    assert current.version == first.version
    change = store.history()[-1]
    assert (change.action, change.version, change.previous_version) == (
        "rollback",
        first.version,
        second.version,
    )
    assert change.reason == REASON
