"""Every pod of every mode meets the Pod Security Standards' restricted profile and the
chart's own rules, and checkov finds nothing that is not answered with a reason."""

from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import V1Container, V1PodSpec

from tests.chart.pods import pod_spec_of, workloads
from tests.chart.render import MODES, RELEASE, REPO, Manifest
from tests.chart.sandbox import CONTAINER_TMP

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
# The volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "config_map",
    "csi",
    "downward_api",
    "empty_dir",
    "ephemeral",
    "persistent_volume_claim",
    "projected",
    "secret",
}
# Checkov findings the chart answers by design, each with its reason on the resource.
ANSWERED = {
    "CKV_K8S_8",
    "CKV_K8S_9",
    "CKV_K8S_15",
    "CKV_K8S_35",
    # The bundled MinIO's keys Job, the one pod that talks to the API (its Secret).
    "CKV_K8S_38",
    "CKV_K8S_40",
    "CKV_K8S_43",
}


def pods_of_every_mode() -> list[tuple[str, str, V1PodSpec, Manifest]]:
    found = []
    for mode_name, mode in MODES.items():
        for workload in workloads(mode.render()):
            name = f"{mode_name}: {workload['kind']}/{workload['metadata']['name']}"
            found.append((name, workload["kind"], pod_spec_of(workload)[1], workload))
    return found


def restricted_violations(spec: V1PodSpec) -> list[str]:
    """What the restricted profile of the Pod Security Standards refuses in a pod."""
    problems = []
    pod = spec.security_context
    if spec.host_network or spec.host_pid or spec.host_ipc:
        problems.append("shares a host namespace")
    for volume in spec.volumes or []:
        kinds = set(volume.model_dump(exclude_none=True)) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume.name} is {kinds}")
    pod_seccomp = pod.seccomp_profile.type if pod and pod.seccomp_profile else None
    pod_non_root = bool(pod and pod.run_as_non_root)
    if pod and pod.run_as_user == 0:
        problems.append("pod runs as UID 0")
    if pod and any(
        not s.name.startswith(("kernel.shm", "net.ipv4.ip_local_port_range"))
        for s in pod.sysctls or []
    ):
        problems.append("unsafe sysctl")
    containers: list[V1Container] = [*spec.containers, *(spec.init_containers or [])]
    for container in containers:
        context = container.security_context
        where = f"container {container.name}"
        if context is None:
            problems.append(f"{where} has no securityContext")
            continue
        if context.privileged:
            problems.append(f"{where} is privileged")
        if context.allow_privilege_escalation is not False:
            problems.append(f"{where} may escalate privileges")
        capabilities = context.capabilities
        if capabilities is None or "ALL" not in (capabilities.drop or []):
            problems.append(f"{where} does not drop ALL capabilities")
        if capabilities and set(capabilities.add or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {capabilities.add}")
        if not (context.run_as_non_root or pod_non_root):
            problems.append(f"{where} may run as root")
        if context.run_as_user == 0:
            problems.append(f"{where} runs as UID 0")
        seccomp = (
            context.seccomp_profile.type if context.seccomp_profile else pod_seccomp
        )
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{where} has seccomp {seccomp}")
        if any(port.host_port for port in container.ports or []):
            problems.append(f"{where} uses a host port")
        if context.proc_mount not in (None, "Default"):
            problems.append(f"{where} mounts /proc {context.proc_mount}")
    return problems


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pod_meets_the_restricted_pod_security_standard(mode: str) -> None:
    for workload in workloads(MODES[mode].render()):
        spec = pod_spec_of(workload)[1]
        assert restricted_violations(spec) == [], workload["metadata"]["name"]


def test_the_restricted_check_catches_a_privileged_pod() -> None:
    workload = MODES["defaults"].render().get("Deployment", "iris")
    spec = pod_spec_of(workload)[1].model_copy(deep=True)
    container = spec.containers[0]
    assert container.security_context is not None
    container.security_context.allow_privilege_escalation = None
    container.security_context.capabilities = None
    spec.host_network = True
    assert len(restricted_violations(spec)) == 3


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pod_follows_the_charts_own_rules(mode: str) -> None:
    """UID, GID and fsGroup 1000; a read-only root with /tmp an emptyDir; no API token;
    no Service links; requests and limits on every container."""
    for workload in workloads(MODES[mode].render()):
        spec = pod_spec_of(workload)[1]
        name = workload["metadata"]["name"]
        pod = spec.security_context
        assert pod is not None
        if "podSecurityContext" not in MODES[mode].values:
            uids = (pod.run_as_user, pod.run_as_group, pod.fs_group)
            assert uids == (1000, 1000, 1000)
        # Only the bundled MinIO's keys Job talks to the API (test_minio_keys.py).
        talks_to_the_api = name.startswith(f"{RELEASE}-minio-keys-")
        assert spec.automount_service_account_token is talks_to_the_api, name
        assert spec.enable_service_links is False, name
        assert spec.service_account_name, name
        empty_dirs = {v.name for v in spec.volumes or [] if v.empty_dir is not None}
        for container in spec.containers:
            context = container.security_context
            assert context is not None
            assert context.read_only_root_filesystem, name
            mounts = {m.mount_path: m.name for m in container.volume_mounts or []}
            assert mounts.get(CONTAINER_TMP) in empty_dirs, name
            resources = container.resources
            assert resources is not None
            assert resources.requests, name
            assert resources.limits, name
            assert {"cpu", "memory"} <= set(resources.requests), name
            assert {"cpu", "memory"} <= set(resources.limits), name


@pytest.mark.parametrize("mode", sorted(MODES))
def test_service_accounts_mount_no_token(mode: str) -> None:
    for account in MODES[mode].render().of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over every mode's manifests, a file per mode."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: `make chart-tools` installs it")
    directory = tmp_path_factory.mktemp("checkov")
    for name, mode in MODES.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(list(mode.render())))
    done = subprocess.run(
        [
            *(str(CHECKOV), "--directory", str(directory)),
            *("--framework", "kubernetes", "--output", "json", "--skip-download"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["check_type"] == "kubernetes"
    return report


def by_file(checks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for check in checks:
        grouped[Path(check["file_path"]).stem].append(check)
    return grouped


def test_checkov_scanned_every_mode(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["summary"]["parsing_errors"] == 0
    assert set(by_file(checkov_report["results"]["passed_checks"])) == set(MODES)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_checkov_finds_nothing_in_any_mode(
    checkov_report: dict[str, Any], mode: str
) -> None:
    failed = by_file(checkov_report["results"]["failed_checks"]).get(mode, [])
    assert [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in failed] == []


def test_every_checkov_skip_is_an_answered_finding_with_a_reason(
    checkov_report: dict[str, Any],
) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    assert skipped
    for check in skipped:
        assert check["check_id"] in ANSWERED, check["check_id"]
        assert len(check["check_result"]["suppress_comment"]) > 20, check["check_id"]
