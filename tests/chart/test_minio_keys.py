"""The bundled MinIO's keys without storage.s3.existingSecret: the chart renders no
keys (so every render is the same bytes), and its Job, run as a process against an
API server over TLS, creates the Secret once and leaves an existing one alone."""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.apiserver import ApiServer, Call, keys_job, run_keys_job, serving
from tests.chart.pods import describe, pod_spec_of, workloads
from tests.chart.render import MODES, NAMESPACE, RELEASE, Manifest, Manifests
from tests.conftest import free_port

SECRET = f"{RELEASE}-s3"
SECRETS_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets"
EXIT_FORBIDDEN = 3
EXIT_API = 4
EXIT_INCOMPLETE = 5
KEYS = ("access-key-id", "secret-access-key")


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return MODES["minio"].render()


@pytest.fixture(scope="module")
def job(manifests: Manifests) -> Manifest:
    found = keys_job(manifests)
    assert found is not None
    return found


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    with serving(tmp_path, NAMESPACE) as running:
        yield running


def decoded(secret: Manifest) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def failure(stderr: str) -> dict[str, str]:
    """The key=value fields of the program's error line."""
    (line,) = [each for each in stderr.splitlines() if each.startswith("ERROR ")]
    head, reason = line.removeprefix("ERROR ").split(" reason=", 1)
    return {**dict(part.split("=", 1) for part in head.split()), "reason": reason}


def test_no_mode_renders_keys_and_the_keys_job_only_with_the_bundled_minio() -> None:
    for name, mode in MODES.items():
        manifests = mode.render()
        assert manifests.of_kind("Secret") == [], name
        bundled = mode.values.get("minio", {}).get("enabled", False)
        assert (keys_job(manifests) is not None) is bundled, name


def test_the_job_creates_the_secret_once_then_leaves_it_alone(
    manifests: Manifests, job: Manifest, api: ApiServer
) -> None:
    first = run_keys_job(job, manifests, api)
    assert first.returncode == 0, first.stderr
    assert api.calls == [
        Call("GET", f"{SECRETS_PATH}/{SECRET}", 404),
        Call("POST", SECRETS_PATH, 201),
    ]
    created = api.secrets[SECRET]
    keys = decoded(created)
    assert sorted(keys) == sorted(KEYS)
    assert keys["access-key-id"].startswith("iris-")
    assert len(keys["access-key-id"]) == 17
    assert len(keys["secret-access-key"]) == 40
    assert set(keys["secret-access-key"]) <= set(string.ascii_letters + string.digits)
    assert created["metadata"]["labels"] == {
        "app.kubernetes.io/name": "iris",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "minio",
    }

    api.calls.clear()
    again = run_keys_job(job, manifests, api)
    assert again.returncode == 0, again.stderr
    assert api.calls == [Call("GET", f"{SECRETS_PATH}/{SECRET}", 200)]
    assert api.secrets[SECRET] is created


def test_a_secret_made_by_another_run_in_between_stands(
    manifests: Manifests, job: Manifest, api: ApiServer
) -> None:
    theirs = {"metadata": {"name": SECRET}, "data": dict.fromkeys(KEYS, "dGhlaXJz")}
    api.created_elsewhere = theirs
    done = run_keys_job(job, manifests, api)
    assert done.returncode == 0, done.stderr
    assert [call.status for call in api.calls] == [404, 409]
    assert api.secrets[SECRET] is theirs


@pytest.mark.parametrize("verb", ["get", "create"])
def test_a_forbidden_call_fails_with_its_own_exit_code_and_says_why(
    manifests: Manifests, job: Manifest, api: ApiServer, verb: str
) -> None:
    api.forbidden = {verb}
    done = run_keys_job(job, manifests, api)
    assert done.returncode == EXIT_FORBIDDEN
    fields = failure(done.stderr)
    assert fields["exit"] == str(EXIT_FORBIDDEN)
    assert fields["reason"].startswith(
        f"forbidden to {verb} Secret {NAMESPACE}/{SECRET}"
    )
    assert api.calls[-1].status == 403
    assert api.secrets == {}


def test_an_unreachable_api_exits_4_for_the_job_to_retry(
    manifests: Manifests, job: Manifest, api: ApiServer
) -> None:
    api.port = free_port()
    done = run_keys_job(job, manifests, api)
    assert done.returncode == EXIT_API
    assert f"https://127.0.0.1:{api.port}" in failure(done.stderr)["reason"]
    assert api.calls == []
    (fail,) = [
        r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"
    ]
    assert EXIT_API not in fail["onExitCodes"]["values"]


def test_an_existing_secret_without_a_key_is_refused_and_kept(
    manifests: Manifests, job: Manifest, api: ApiServer
) -> None:
    partial = {"metadata": {"name": SECRET}, "data": {"access-key-id": "aXJpcw=="}}
    api.secrets[SECRET] = partial
    done = run_keys_job(job, manifests, api)
    assert done.returncode == EXIT_INCOMPLETE
    assert "['secret-access-key']" in failure(done.stderr)["reason"]
    assert api.secrets[SECRET] is partial
    assert [call.method for call in api.calls] == ["GET"]
    # A retry would refuse again: the Job fails at once on this exit code.
    (fail,) = [
        r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"
    ]
    assert EXIT_INCOMPLETE in fail["onExitCodes"]["values"]
    assert EXIT_FORBIDDEN not in fail["onExitCodes"]["values"]


def test_only_the_keys_job_holds_a_token_and_its_role_reaches_one_secret(
    manifests: Manifests, job: Manifest
) -> None:
    for workload in workloads(manifests):
        token = pod_spec_of(workload)[1].automount_service_account_token
        assert token is (workload is job), workload["metadata"]["name"]
    account = pod_spec_of(job)[1].service_account_name
    binding = manifests.get("RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    role = manifests.get("Role", binding["roleRef"]["name"])
    granted = {
        (verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for verb in rule["verbs"]
        if rule["apiGroups"] == [""] and rule["resources"] == ["secrets"]
    }
    assert len(role["rules"]) == 2
    # create cannot name its object in RBAC; get is held to the one Secret.
    assert granted == {("get", (SECRET,)), ("create", ())}


def test_every_pod_reads_the_secret_the_job_makes(
    manifests: Manifests, job: Manifest
) -> None:
    arguments = describe(job, manifests).container().argv
    assert f"--secret={SECRET}" in arguments
    referenced = {
        variable.value_from.secret_key_ref.name
        for workload in workloads(manifests)
        for container in pod_spec_of(workload)[1].containers
        for variable in container.env or []
        if variable.value_from and variable.value_from.secret_key_ref
    }
    assert referenced == {SECRET}
