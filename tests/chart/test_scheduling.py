"""What a scheduler and the eviction API would do with the rendered chart.

No cluster runs here, so this is a small model of the Kubernetes rules the chart's
high availability rests on, applied to the objects Helm renders for each storage mode:

- A ReadWriteOnce volume attaches to one node at a time. A pod on another node stays
  in ContainerCreating ("Multi-Attach error"): for CSI disks (EBS, PD) that is the
  attach/detach controller's rule, which the scheduler does not filter on.
- A node-local volume (local-path, WaitForFirstConsumer) is provisioned on its first
  consumer's node; the PersistentVolume's nodeAffinity then filters every later pod
  to that node.
- Required inter-pod affinity (kube-scheduler's InterPodAffinity filter): a node fits
  if a pod matching the term is in its topology domain. When no pod matches anywhere
  and the incoming pod matches its own term, every node fits.
- topologySpreadConstraints: DoNotSchedule filters nodes that would exceed maxSkew;
  ScheduleAnyway scores, preferring the node with the fewest matching pods.
- A cordoned node (spec.unschedulable) takes no new pod.
- The eviction API refuses an eviction that would leave fewer healthy pods than a
  PodDisruptionBudget's minAvailable; with unhealthyPodEvictionPolicy AlwaysAllow, a
  pod that is not ready may always go.
- kubectl drain cordons the node and evicts its pods, retrying refusals until none
  remain: it never completes if the budget can never allow the next eviction.

Terminating pods are modelled as gone at once, which only makes affinity and
attachment look easier: a deadlock found here is a real one.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from tests.chart.pods import selects
from tests.chart.render import (
    BUNDLED_MINIO,
    EXTERNAL_S3,
    RELEASE,
    Manifests,
    render,
)

NODES = ("node-a", "node-b", "node-c")
HOSTNAME = "kubernetes.io/hostname"
# node-bound: local-path; one-attachment: a cloud disk; any-node: ReadWriteMany or S3.
Volume = Literal["node-bound", "one-attachment", "any-node"]


@dataclass
class Pod:
    name: str
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    node: str | None = None

    @property
    def claim(self) -> str | None:
        for volume in self.spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                return str(volume["persistentVolumeClaim"]["claimName"])
        return None


@dataclass
class Cluster:
    volume: Volume
    pods: list[Pod] = field(default_factory=list)
    cordoned: set[str] = field(default_factory=set)
    bound_to: str | None = None

    def attached_to(self, claim: str) -> str | None:
        """The node the claim is attached to: the one its first running user is on."""
        for pod in self.pods:
            if pod.claim == claim and pod.node is not None:
                return pod.node
        return None

    def running(self, pod: Pod) -> bool:
        if pod.node is None:
            return False
        if pod.claim is None or self.volume != "one-attachment":
            return True
        return self.attached_to(pod.claim) == pod.node

    def fits(self, pod: Pod, node: str) -> bool:
        if node in self.cordoned:
            return False
        if (
            self.volume == "node-bound"
            and pod.claim
            and self.bound_to
            not in (
                None,
                node,
            )
        ):
            return False
        affinity = pod.spec.get("affinity", {}).get("podAffinity", {})
        for term in affinity.get("requiredDuringSchedulingIgnoredDuringExecution", []):
            assert term["topologyKey"] == HOSTNAME
            matching = [p for p in self.pods if p.node and matches(term, p.labels)]
            if not matching and matches(term, pod.labels):
                continue
            if not any(p.node == node for p in matching):
                return False
        for constraint in pod.spec.get("topologySpreadConstraints", []):
            if constraint["whenUnsatisfiable"] == "DoNotSchedule":
                counts = self.spread_counts(constraint)
                counts[node] += 1
                if max(counts.values()) - min(counts.values()) > constraint["maxSkew"]:
                    return False
        return True

    def spread_counts(self, constraint: Mapping[str, Any]) -> dict[str, int]:
        eligible = [n for n in NODES if n not in self.cordoned]
        counts = dict.fromkeys(eligible, 0)
        for pod in self.pods:
            if pod.node in counts and matches(constraint, pod.labels):
                counts[pod.node] += 1
        return counts

    def schedule(self, pod: Pod) -> None:
        """Place the pod as kube-scheduler would, or leave it Pending."""
        candidates = [node for node in NODES if self.fits(pod, node)]
        self.pods.append(pod)
        if not candidates:
            return
        soft = [
            c
            for c in pod.spec.get("topologySpreadConstraints", [])
            if c["whenUnsatisfiable"] == "ScheduleAnyway"
        ]

        def crowding(node: str) -> int:
            return sum(self.spread_counts(c).get(node, 0) for c in soft)

        pod.node = min(candidates, key=lambda node: (crowding(node), node))
        if self.volume == "node-bound" and pod.claim and self.bound_to is None:
            self.bound_to = pod.node


def matches(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    selector = term["labelSelector"]
    if not selects(selector.get("matchLabels", {}), labels):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@dataclass(frozen=True)
class Release:
    """The rendered predictor Deployment, its budget and the training Job."""

    manifests: Manifests

    @property
    def replicas(self) -> int:
        hpa = self.manifests.of_kind("HorizontalPodAutoscaler")
        if hpa:
            return int(hpa[0]["spec"]["minReplicas"])
        return int(self.manifests.get("Deployment", RELEASE)["spec"]["replicas"])

    def predictor(self, name: str) -> Pod:
        template = self.manifests.get("Deployment", RELEASE)["spec"]["template"]
        return Pod(name, template["metadata"]["labels"], template["spec"])

    def training(self) -> Pod:
        template = self.manifests.training_job()["spec"]["template"]
        return Pod("train", template["metadata"]["labels"], template["spec"])

    def budget(self) -> Mapping[str, Any] | None:
        budgets = self.manifests.of_kind("PodDisruptionBudget")
        return budgets[0]["spec"] if budgets else None

    def install(self, volume: Volume) -> tuple[Cluster, bool]:
        """Helm applies the Deployment, then the Job; whether the Job could run,
        after which it completes and its pod no longer counts."""
        cluster = Cluster(volume)
        for index in range(self.replicas):
            cluster.schedule(self.predictor(f"predictor-{index}"))
        job = self.training()
        cluster.schedule(job)
        job_ran = cluster.running(job)
        cluster.pods.remove(job)
        return cluster, job_ran

    def ready(self, cluster: Cluster) -> list[Pod]:
        return [
            p
            for p in cluster.pods
            if p.name.startswith("predictor") and cluster.running(p)
        ]

    def eviction_allowed(self, cluster: Cluster, pod: Pod) -> bool:
        budget = self.budget()
        if budget is None:
            return True
        if not cluster.running(pod):
            assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
            return True
        return len(self.ready(cluster)) - 1 >= int(budget["minAvailable"])

    def drain(self, cluster: Cluster, node: str) -> tuple[bool, int]:
        """Whether draining the node completes, and the fewest ready predictors
        while it ran."""
        cluster.cordoned.add(node)
        fewest = len(self.ready(cluster))
        for _ in range(4 * len(NODES) * self.replicas):
            victims = [p for p in cluster.pods if p.node == node]
            if not victims:
                return True, fewest
            allowed = [p for p in victims if self.eviction_allowed(cluster, p)]
            if not allowed:
                return False, fewest
            victim = allowed[0]
            cluster.pods.remove(victim)
            fewest = min(fewest, len(self.ready(cluster)))
            cluster.schedule(self.predictor(f"{victim.name}-replaced"))
        raise AssertionError("the drain neither completed nor stopped")

    def can_run_apart(self, volume: Volume) -> bool:
        """Whether two predictors can both run, on different nodes."""
        for first, second in itertools.permutations(NODES, 2):
            cluster = Cluster(volume)
            placed = self.predictor("predictor-0")
            cluster.schedule(placed)
            if placed.node != first:
                placed.node = first
                cluster.bound_to = first if volume == "node-bound" else None
            other = self.predictor("predictor-1")
            if cluster.fits(other, second):
                other.node = second
                cluster.pods.append(other)
                if cluster.running(placed) and cluster.running(other):
                    return True
        return False


READ_WRITE_MANY = {"storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}}

# (values, how the cluster provides the claim, whether predictors can spread)
STORAGE: dict[str, tuple[dict[str, Any], Volume, bool]] = {
    "pvc-rwo-local-path": ({}, "node-bound", False),
    "pvc-rwo-cloud-disk": ({}, "one-attachment", False),
    "pvc-rwx": (READ_WRITE_MANY, "any-node", True),
    "s3-external": (EXTERNAL_S3, "any-node", True),
    "s3-bundled-minio": (BUNDLED_MINIO, "any-node", True),
}


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_every_pod_of_an_install_runs(storage: str) -> None:
    values, volume, _ = STORAGE[storage]
    release = Release(render(values))
    cluster, job_ran = release.install(volume)
    assert job_ran
    assert len(release.ready(cluster)) == release.replicas >= 2


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_predictors_spread_only_where_every_node_reads_the_models(
    storage: str,
) -> None:
    values, volume, spreads = STORAGE[storage]
    release = Release(render(values))
    assert release.can_run_apart(volume) is spreads
    cluster, _ = release.install(volume)
    nodes = {p.node for p in release.ready(cluster)}
    assert len(nodes) == (2 if spreads else 1)


@pytest.mark.parametrize("storage", sorted(STORAGE))
@pytest.mark.parametrize("node", NODES)
def test_draining_any_node_completes(storage: str, node: str) -> None:
    values, volume, spreads = STORAGE[storage]
    release = Release(render(values))
    cluster, _ = release.install(volume)
    completed, fewest_ready = release.drain(cluster, node)
    assert completed
    if spreads:
        # The budget keeps predictions served throughout.
        assert fewest_ready >= 1
        assert len(release.ready(cluster)) == release.replicas


def test_the_model_finds_the_deadlock_of_a_budget_on_a_node_bound_volume() -> None:
    # The spread and budget of shared storage, on a volume bound to one node: what
    # the chart's defaults were, and what it now refuses.
    release = Release(render(READ_WRITE_MANY))
    cluster, _ = release.install("node-bound")
    (node,) = {p.node for p in cluster.pods}
    assert node is not None
    # One predictor went; its replacement can only go to the cordoned node.
    assert release.drain(cluster, node) == (False, release.replicas - 1)


def test_the_model_finds_the_multi_attach_of_a_spread_on_a_cloud_disk() -> None:
    release = Release(render(READ_WRITE_MANY))
    cluster, _ = release.install("one-attachment")
    assert len(release.ready(cluster)) == 1 < release.replicas
