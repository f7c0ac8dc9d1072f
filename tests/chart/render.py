"""The chart rendered by the real Helm CLI, and the objects it renders.

Every render pins the Kubernetes version (Helm's default is its own newest) and the
API versions the "cluster" serves, so a test says exactly which cluster it renders for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "iris"
# Installed next to the venv's python by `make chart-tools`.
HELM = Path(sys.executable).parent / "helm"
RELEASE = "iris"
NAMESPACE = "iris-test"
# The ends of Chart.yaml's kubeVersion range; test_render checks they still are.
OLDEST_KUBERNETES = "1.29"
NEWEST_KUBERNETES = "1.37"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
MONITORING_APIS = (SERVICE_MONITOR_API, PROMETHEUS_RULE_API)

Manifest = dict[str, Any]


class HelmError(Exception):
    """Helm refused: its exit status and what it printed."""

    def __init__(self, command: Sequence[str], status: int, output: str) -> None:
        super().__init__(f"{' '.join(command)} exited {status}:\n{output}")
        self.status = status
        self.output = output


def helm(*args: str) -> str:
    """Run the Helm CLI; its standard output, or a HelmError."""
    if not HELM.exists():
        raise RuntimeError(f"{HELM} is missing: `make chart-tools` installs it")
    command = [str(HELM), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HelmError(command, done.returncode, done.stderr + done.stdout)
    return done.stdout


def _values_arguments(values: Mapping[str, Any], directory: str) -> list[str]:
    # A values file keeps YAML's types; --set would turn 0.5 into a string.
    path = Path(directory) / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["--values", str(path)]


@dataclass(frozen=True)
class Manifests:
    """The objects of one render, in Helm's order."""

    objects: tuple[Manifest, ...]

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.objects)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [each for each in self.objects if each["kind"] == kind]

    def find(self, kind: str, name: str) -> Manifest | None:
        for each in self.of_kind(kind):
            if each["metadata"]["name"] == name:
                return each
        return None

    def get(self, kind: str, name: str | None = None) -> Manifest:
        """The one object of a kind (and name); an AssertionError if not exactly one."""
        found = [
            each
            for each in self.of_kind(kind)
            if name is None or each["metadata"]["name"] == name
        ]
        assert len(found) == 1, (
            f"expected one {kind} {name or ''}, rendered "
            f"{[each['metadata']['name'] for each in self.of_kind(kind)]}"
        )
        return found[0]

    def training_job(self) -> Manifest:
        """The training Job: not the rollback Job, nor the bundled MinIO's keys Job."""
        found = [
            each
            for each in self.of_kind("Job")
            if each["spec"]["template"]["spec"]["containers"][0]["name"] == "train"
        ]
        assert len(found) == 1, f"expected one training Job, rendered {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return [each["kind"] for each in self.objects]

    def hooks(self) -> list[Manifest]:
        return [
            each
            for each in self.objects
            if "helm.sh/hook" in each["metadata"].get("annotations", {})
        ]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    api_versions: Sequence[str] = (),
    kube_version: str = OLDEST_KUBERNETES,
    chart: Path = CHART,
) -> Manifests:
    """`helm template` of the chart, hooks (the helm test pod) included."""
    return _render(
        json.dumps(values or {}, sort_keys=True),
        tuple(api_versions),
        kube_version,
        chart,
    )


@cache
def _render(
    values_json: str, api_versions: tuple[str, ...], kube_version: str, chart: Path
) -> Manifests:
    with tempfile.TemporaryDirectory() as directory:
        arguments = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
        arguments += ["--kube-version", f"{kube_version}.0"]
        arguments += _values_arguments(json.loads(values_json), directory)
        for api in api_versions:
            arguments += ["--api-versions", api]
        text = helm(*arguments)
    return Manifests(tuple(each for each in yaml.safe_load_all(text) if each))


def notes(values: Mapping[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` prints it (a client-side dry run)."""
    with tempfile.TemporaryDirectory() as directory:
        arguments = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE]
        arguments += ["--dry-run=client", "--output", "json"]
        arguments += _values_arguments(values or {}, directory)
        release = json.loads(helm(*arguments))
    return str(release["info"]["notes"])


def lint(values: Mapping[str, Any] | None = None) -> str:
    with tempfile.TemporaryDirectory() as directory:
        arguments = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
        arguments += _values_arguments(values or {}, directory)
        return helm(*arguments)


def default_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


@dataclass(frozen=True)
class Mode:
    """One way to install the chart: its values and what the cluster serves."""

    values: Mapping[str, Any]
    api_versions: tuple[str, ...] = ()

    def render(self, kube_version: str = OLDEST_KUBERNETES) -> Manifests:
        return render(
            self.values, api_versions=self.api_versions, kube_version=kube_version
        )


EXTERNAL_S3: dict[str, Any] = {
    "storage": {
        "type": "s3",
        "s3": {
            "endpoint": "https://s3.example.com",
            "bucket": "ml-models",
            "prefix": "iris/prod",
            "existingSecret": "iris-s3-keys",
        },
    }
}
BUNDLED_MINIO: dict[str, Any] = {"storage": {"type": "s3"}, "minio": {"enabled": True}}
# An external endpoint reached with the pods' cloud IAM role: no keys anywhere.
ROLE = "arn:aws:iam::111122223333:role"
WORKLOAD_IDENTITY: dict[str, Any] = {
    "storage": {"type": "s3", "s3": {"endpoint": "https://s3.us-east-1.amazonaws.com"}},
    "training": {
        "serviceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": f"{ROLE}/iris-write"}
        }
    },
    "predictor": {
        "serviceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": f"{ROLE}/iris-read"}
        }
    },
    "networkPolicy": {
        "cloudMetadataEgress": True,
        "s3EgressTo": [{"ipBlock": {"cidr": "52.216.0.0/15"}}],
    },
}
READ_ONLY_PREDICTORS: dict[str, Any] = {
    "storage": {
        "type": "s3",
        "s3": {
            **EXTERNAL_S3["storage"]["s3"],
            "predictorExistingSecret": "iris-s3-read-only",
        },
    }
}

# Every mode the tests render, lint, validate and scan.
MODES: dict[str, Mode] = {
    "defaults": Mode({}),
    "pvc-existing-claim": Mode(
        {"storage": {"pvc": {"existingClaim": "shared-models"}}}
    ),
    "pvc-deleted-on-uninstall": Mode(
        {"storage": {"pvc": {"keepOnUninstall": False, "storageClass": "standard"}}}
    ),
    "pvc-read-write-many": Mode(
        {"storage": {"pvc": {"accessModes": ["ReadWriteMany"], "storageClass": "nfs"}}}
    ),
    "s3-external": Mode(EXTERNAL_S3),
    "s3-workload-identity": Mode(WORKLOAD_IDENTITY),
    "s3-read-only-predictors": Mode(READ_ONLY_PREDICTORS),
    "minio": Mode(BUNDLED_MINIO),
    "hpa-off": Mode({"autoscaling": {"enabled": False}}),
    "monitoring-on": Mode(
        {
            "metrics": {
                "serviceMonitor": {
                    "enabled": True,
                    "additionalLabels": {"release": "prometheus"},
                },
                "prometheusRule": {
                    "enabled": True,
                    "additionalLabels": {"release": "prometheus"},
                    "alertLabels": {"team": "ml"},
                },
            }
        }
    ),
    "monitoring-default-with-crds": Mode({}, MONITORING_APIS),
    "monitoring-off-with-crds": Mode(
        {
            "metrics": {
                "serviceMonitor": {"enabled": False},
                "prometheusRule": {"enabled": False},
            }
        },
        MONITORING_APIS,
    ),
    "cronjob": Mode(
        {"training": {"schedule": {"enabled": True}, "settings": {"maxDepth": 0}}}
    ),
    "minio-cronjob-monitoring": Mode(
        {
            **BUNDLED_MINIO,
            "training": {"schedule": {"enabled": True}},
            "metrics": {
                "serviceMonitor": {"enabled": True},
                "prometheusRule": {"enabled": True},
            },
        },
        MONITORING_APIS,
    ),
    "extension-points": Mode(
        {
            **EXTERNAL_S3,
            "image": {"digest": "sha256:" + "ab" * 32},
            "commonLabels": {"team": "ml"},
            "podSecurityContext": {"runAsUser": None, "runAsGroup": None},
            "containerSecurityContext": {"runAsUser": None, "runAsGroup": None},
            "predictor": {
                "podLabels": {"sidecar.istio.io/inject": "false"},
                "priorityClassName": "serving",
                "extraEnv": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                "extraEnvFrom": [{"configMapRef": {"name": "proxy", "optional": True}}],
                "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/component": "predictor"}
                        },
                    }
                ],
            },
            "training": {
                "podLabels": {"cost-center": "training"},
                "priorityClassName": "batch",
                "extraEnv": [{"name": "OMP_NUM_THREADS", "value": "2"}],
                "extraEnvFrom": [{"secretRef": {"name": "tracking", "optional": True}}],
                "extraVolumes": [{"name": "cache", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            },
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "hosts": [
                    {
                        "host": "iris.example.com",
                        "paths": [{"path": "/v1", "pathType": "Prefix"}],
                    }
                ],
                "tls": [{"secretName": "iris-tls", "hosts": ["iris.example.com"]}],
            },
            "httpRoute": {
                "enabled": True,
                "parentRefs": [
                    {
                        "name": "gateway",
                        "namespace": "gateway-system",
                        "sectionName": "https",
                    }
                ],
                "hostnames": ["iris.example.com"],
            },
        }
    ),
    "clusterip-features-off": Mode(
        {
            "service": {"type": "ClusterIP"},
            "networkPolicy": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "autoscaling": {"enabled": False},
            "metrics": {"dashboard": {"enabled": False}},
            "tests": {"enabled": False},
            "predictor": {"topologySpread": {"enabled": False}, "replicaCount": 1},
            "training": {"enabled": False},
        }
    ),
}
