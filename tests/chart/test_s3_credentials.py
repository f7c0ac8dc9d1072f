"""Where the pods' S3 credentials come from: a Secret, a read-only Secret for the
predictors, or no keys at all (the ServiceAccount's cloud IAM role), and the
NetworkPolicy egress the credential chain needs."""

from __future__ import annotations

from typing import Any

from tests.chart.pods import pod_spec_of, workloads
from tests.chart.render import (
    MODES,
    READ_ONLY_PREDICTORS,
    RELEASE,
    WORKLOAD_IDENTITY,
    Manifest,
)
from tests.chart.test_wiring import policy_of, raw_container

KEY_VARIABLES = {"IRIS_S3_ACCESS_KEY_ID", "IRIS_S3_SECRET_ACCESS_KEY"}
METADATA_CIDR = "169.254.169.254/32"


def key_secrets(workload: Manifest) -> dict[str, str]:
    """Each S3 key variable of the workload's container and the Secret it names."""
    return {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]["name"]
        for entry in raw_container(workload).get("env", [])
        if entry["name"] in KEY_VARIABLES
    }


def test_workload_identity_renders_no_keys_and_the_role_annotations() -> None:
    manifests = MODES["s3-workload-identity"].render()

    assert manifests.of_kind("Secret") == []
    for workload in workloads(manifests):
        assert key_secrets(workload) == {}, workload["metadata"]["name"]
    for workload in (manifests.training_job(), manifests.get("Deployment", RELEASE)):
        names = {e["name"] for e in raw_container(workload)["env"]}
        assert "IRIS_S3_ENDPOINT" in names
    for component in ("training", "predictor"):
        account = manifests.get("ServiceAccount", f"{RELEASE}-{component}")
        expected = WORKLOAD_IDENTITY[component]["serviceAccount"]["annotations"]
        assert account["metadata"]["annotations"] == expected
    job = manifests.training_job()
    deployment = manifests.get("Deployment", RELEASE)
    assert pod_spec_of(job)[1].service_account_name == f"{RELEASE}-training"
    assert pod_spec_of(deployment)[1].service_account_name == f"{RELEASE}-predictor"


def test_predictors_read_with_their_own_secret_and_the_job_with_its_own() -> None:
    manifests = MODES["s3-read-only-predictors"].render()
    s3 = READ_ONLY_PREDICTORS["storage"]["s3"]

    assert key_secrets(manifests.get("Deployment", RELEASE)) == dict.fromkeys(
        KEY_VARIABLES, s3["predictorExistingSecret"]
    )
    assert key_secrets(manifests.training_job()) == dict.fromkeys(
        KEY_VARIABLES, s3["existingSecret"]
    )


def test_predictors_default_to_the_jobs_secret() -> None:
    manifests = MODES["s3-external"].render()

    assert key_secrets(manifests.get("Deployment", RELEASE)) == key_secrets(
        manifests.training_job()
    )


def egress_rules(mode: str) -> list[list[dict[str, Any]]]:
    """The egress rules of the Job's and the predictors' NetworkPolicies."""
    manifests = MODES[mode].render()
    policies = manifests.of_kind("NetworkPolicy")
    return [
        policy_of(policies, pod_spec_of(workload)[0])["spec"]["egress"]
        for workload in (manifests.training_job(), manifests.get("Deployment", RELEASE))
    ]


def test_workload_identity_egress_allows_dns_the_bucket_and_the_metadata() -> None:
    s3_peers = WORKLOAD_IDENTITY["networkPolicy"]["s3EgressTo"]
    for egress in egress_rules("s3-workload-identity"):
        dns, bucket, metadata = egress
        assert {port["port"] for port in dns["ports"]} == {53}
        assert bucket["to"] == s3_peers
        assert bucket["ports"] == [{"port": 443, "protocol": "TCP"}]
        assert metadata == {
            "to": [{"ipBlock": {"cidr": METADATA_CIDR}}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        }


def test_the_metadata_service_is_closed_unless_asked() -> None:
    for egress in egress_rules("s3-external"):
        assert METADATA_CIDR not in str(egress)
