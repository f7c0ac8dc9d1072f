"""A rendered pod as what must run: for each container its program, environment,
files, ports and probes, resolved from the rendered objects as the kubelet would.

This is the one module that reads a pod spec. The conformance run starts what it
describes as local processes (``tests/chart/sandbox.py``); a container runtime can
start the same description from the image.

What the kubelet does and this does too: ``command`` + ``args`` with ``$(VAR)``
expanded; ``env`` in order (``envFrom`` first) with ``secretKeyRef``,
``configMapKeyRef`` and ``fieldRef`` resolved from the rendered objects; named ports
resolved per container; probes' ports resolved by name. Not modelled: Service links
(the chart turns them off), downward-API volumes, ``resourceFieldRef``.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubernetes.client import (
    V1ConfigMapKeySelector,
    V1Container,
    V1CronJob,
    V1Deployment,
    V1EnvVarSource,
    V1Job,
    V1Pod,
    V1PodSpec,
    V1Probe,
    V1SecretKeySelector,
    V1Service,
    V2HorizontalPodAutoscaler,
)

from tests.chart.render import Manifest, Manifests

PROBE_KINDS = ("startup", "liveness", "readiness")
# Kubernetes' variable references: $(NAME) expands, $$ escapes a dollar.
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class PodSpecError(Exception):
    """The pod cannot start as rendered: a missing Secret key, an unknown port name."""


@dataclass(frozen=True)
class Probe:
    kind: str
    path: str
    port: int
    scheme: str
    initial_delay_seconds: int
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int


@dataclass(frozen=True)
class Mount:
    """A volume mounted into a container; ``claim`` for a PersistentVolumeClaim."""

    volume: str
    path: str
    read_only: bool
    kind: str
    claim: str | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    mounts: tuple[Mount, ...]
    ports: Mapping[str, int]
    probes: Mapping[str, Probe]
    pre_stop: tuple[str, ...] | None
    working_dir: str | None
    user: int | None
    group: int | None
    read_only_root: bool
    no_new_privileges: bool
    dropped_capabilities: frozenset[str]

    def port(self, port: int | str) -> int:
        """A port number, or a named port resolved against this container."""
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        if port not in self.ports:
            raise PodSpecError(
                f"container {self.name} has no port named {port!r}; "
                f"its ports: {dict(self.ports)}"
            )
        return self.ports[port]


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    containers: tuple[Container, ...]
    fs_group: int | None
    supplemental_groups: tuple[int, ...]
    termination_grace_period_seconds: int
    restart_policy: str
    service_account: str | None
    enable_service_links: bool
    volumes: Mapping[str, Mount] = field(default_factory=dict)

    def container(self, name: str | None = None) -> Container:
        if name is None:
            assert len(self.containers) == 1, f"{self.name} has several containers"
            return self.containers[0]
        for container in self.containers:
            if container.name == name:
                return container
        raise PodSpecError(f"pod {self.name} has no container {name!r}")

    def named_port(self, port: int | str) -> int:
        """A Service's targetPort resolved against this pod, as an endpoint would be."""
        if isinstance(port, int) or port.isdigit():
            return int(port)
        for container in self.containers:
            if port in container.ports:
                return container.ports[port]
        raise PodSpecError(f"no container of pod {self.name} has a port named {port!r}")

    def claims(self) -> set[str]:
        return {
            mount.claim
            for container in self.containers
            for mount in container.mounts
            if mount.claim is not None
        }


def pod_spec_of(workload: Manifest) -> tuple[dict[str, str], V1PodSpec]:
    """The pod labels and spec a Deployment, Job, CronJob or Pod creates."""
    kind = workload["kind"]
    if kind == "Pod":
        pod = V1Pod.model_validate(workload)
        assert pod.metadata is not None
        assert pod.spec is not None
        return dict(pod.metadata.labels or {}), pod.spec
    if kind == "CronJob":
        cron = V1CronJob.model_validate(workload)
        assert cron.spec is not None
        assert cron.spec.job_template.spec is not None
        template = cron.spec.job_template.spec.template
    elif kind == "Job":
        job = V1Job.model_validate(workload)
        assert job.spec is not None
        template = job.spec.template
    elif kind == "Deployment":
        deployment = V1Deployment.model_validate(workload)
        assert deployment.spec is not None
        template = deployment.spec.template
    else:
        raise PodSpecError(f"a {kind} creates no pods")
    assert template.metadata is not None
    assert template.spec is not None
    return dict(template.metadata.labels or {}), template.spec


def describe(
    workload: Manifest,
    manifests: Manifests,
    *,
    name: str | None = None,
    pod_ip: str | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> Pod:
    """What one pod of ``workload`` runs. ``secrets`` stands in for Secrets the chart
    does not render (an existingSecret), by name then key."""
    labels, spec = pod_spec_of(workload)
    metadata = workload["metadata"]
    pod_name = name or metadata["name"]
    namespace = metadata.get("namespace", "default")
    context = _Context(
        manifests=manifests,
        secrets=secrets or {},
        fields={
            "metadata.name": pod_name,
            "metadata.namespace": namespace,
            "spec.serviceAccountName": spec.service_account_name or "default",
            **({"status.podIP": pod_ip} if pod_ip else {}),
        },
    )
    volumes = _volumes(spec)
    security = spec.security_context
    containers = tuple(
        _container(each, spec, volumes, context) for each in spec.containers
    )
    return Pod(
        name=pod_name,
        namespace=namespace,
        labels=labels,
        containers=containers,
        fs_group=security.fs_group if security else None,
        supplemental_groups=tuple(security.supplemental_groups or [])
        if security
        else (),
        termination_grace_period_seconds=(
            30
            if spec.termination_grace_period_seconds is None
            else spec.termination_grace_period_seconds
        ),
        restart_policy=spec.restart_policy or "Always",
        service_account=spec.service_account_name,
        enable_service_links=spec.enable_service_links is not False,
        volumes=volumes,
    )


@dataclass(frozen=True)
class _Context:
    manifests: Manifests
    secrets: Mapping[str, Mapping[str, str]]
    fields: Mapping[str, str]

    def secret(self, name: str) -> Mapping[str, str] | None:
        if name in self.secrets:
            return self.secrets[name]
        rendered = self.manifests.find("Secret", name)
        if rendered is None:
            return None
        decoded = {
            key: base64.b64decode(value).decode()
            for key, value in (rendered.get("data") or {}).items()
        }
        return {**decoded, **(rendered.get("stringData") or {})}

    def config_map(self, name: str) -> Mapping[str, str] | None:
        rendered = self.manifests.find("ConfigMap", name)
        return None if rendered is None else dict(rendered.get("data") or {})


def _volumes(spec: V1PodSpec) -> dict[str, Mount]:
    volumes: dict[str, Mount] = {}
    for volume in spec.volumes or []:
        if volume.persistent_volume_claim is not None:
            volumes[volume.name] = Mount(
                volume.name,
                "",
                bool(volume.persistent_volume_claim.read_only),
                "persistentVolumeClaim",
                volume.persistent_volume_claim.claim_name,
            )
        elif volume.empty_dir is not None:
            volumes[volume.name] = Mount(volume.name, "", False, "emptyDir")
        else:
            kinds = sorted(volume.model_dump(exclude_none=True).keys() - {"name"})
            raise PodSpecError(f"volume {volume.name}: {kinds} are not modelled")
    return volumes


def _container(
    container: V1Container,
    spec: V1PodSpec,
    volumes: Mapping[str, Mount],
    context: _Context,
) -> Container:
    environment = _environment(container, context)
    ports = {
        port.name: port.container_port for port in container.ports or [] if port.name
    }
    mounts = []
    for mount in container.volume_mounts or []:
        if mount.name not in volumes:
            raise PodSpecError(
                f"container {container.name} mounts volume {mount.name!r}, which the "
                f"pod does not define; its volumes: {sorted(volumes)}"
            )
        if mount.sub_path or mount.sub_path_expr:
            raise PodSpecError(f"{container.name}: subPath mounts are not modelled")
        volume = volumes[mount.name]
        mounts.append(
            Mount(
                volume.volume,
                mount.mount_path,
                bool(mount.read_only) or volume.read_only,
                volume.kind,
                volume.claim,
            )
        )
    described = Container(
        name=container.name,
        image=container.image or "",
        argv=tuple(
            _expand(part, environment)
            for part in [*(container.command or []), *(container.args or [])]
        ),
        environment=environment,
        mounts=tuple(mounts),
        ports=ports,
        probes={},
        pre_stop=None,
        working_dir=container.working_dir,
        user=_security(container, spec, "run_as_user"),
        group=_security(container, spec, "run_as_group"),
        read_only_root=bool(
            container.security_context
            and container.security_context.read_only_root_filesystem
        ),
        no_new_privileges=bool(
            container.security_context
            and container.security_context.allow_privilege_escalation is False
        ),
        dropped_capabilities=frozenset(
            container.security_context.capabilities.drop or []
            if container.security_context and container.security_context.capabilities
            else []
        ),
    )
    probes = {
        kind: _probe(kind, probe, described)
        for kind, probe in (
            ("startup", container.startup_probe),
            ("liveness", container.liveness_probe),
            ("readiness", container.readiness_probe),
        )
        if probe is not None
    }
    pre_stop = None
    if container.lifecycle and container.lifecycle.pre_stop:
        handler = container.lifecycle.pre_stop
        if handler.var_exec is None or not handler.var_exec.command:
            raise PodSpecError(
                f"{container.name}: only exec preStop hooks are modelled"
            )
        pre_stop = tuple(handler.var_exec.command)
    return dataclasses.replace(described, probes=probes, pre_stop=pre_stop)


def _security(container: V1Container, spec: V1PodSpec, name: str) -> int | None:
    # A container's securityContext wins over the pod's, field by field.
    for context in (container.security_context, spec.security_context):
        value = getattr(context, name, None) if context is not None else None
        if value is not None:
            return int(value)
    return None


def _probe(kind: str, probe: V1Probe, container: Container) -> Probe:
    if probe.http_get is None:
        raise PodSpecError(f"{container.name}: only httpGet {kind} probes are modelled")
    return Probe(
        kind=kind,
        path=probe.http_get.path or "/",
        port=container.port(probe.http_get.port),
        scheme=(probe.http_get.scheme or "HTTP").lower(),
        initial_delay_seconds=probe.initial_delay_seconds or 0,
        period_seconds=probe.period_seconds or 10,
        timeout_seconds=probe.timeout_seconds or 1,
        failure_threshold=probe.failure_threshold or 3,
    )


def _environment(container: V1Container, context: _Context) -> dict[str, str]:
    environment: dict[str, str] = {}
    for source in container.env_from or []:
        prefix = source.prefix or ""
        if source.config_map_ref is not None:
            values = context.config_map(source.config_map_ref.name or "")
            optional = source.config_map_ref.optional
            what = f"ConfigMap {source.config_map_ref.name}"
        elif source.secret_ref is not None:
            values = context.secret(source.secret_ref.name or "")
            optional = source.secret_ref.optional
            what = f"Secret {source.secret_ref.name}"
        else:
            raise PodSpecError(f"{container.name}: an envFrom source is not modelled")
        if values is None:
            if optional:
                continue
            raise PodSpecError(f"{container.name}: envFrom names a missing {what}")
        environment.update({prefix + key: value for key, value in values.items()})
    for variable in container.env or []:
        if variable.value_from is None:
            environment[variable.name] = _expand(variable.value or "", environment)
            continue
        resolved = _value_from(
            container.name, variable.name, variable.value_from, context
        )
        if resolved is not None:
            environment[variable.name] = resolved
    return environment


def _value_from(
    container: str, variable: str, source: V1EnvVarSource, context: _Context
) -> str | None:
    where = f"{container}: {variable}"
    selector: V1SecretKeySelector | V1ConfigMapKeySelector
    if source.secret_key_ref is not None:
        selector = source.secret_key_ref
        values = context.secret(selector.name or "")
        what = f"Secret {selector.name}"
    elif source.config_map_key_ref is not None:
        selector = source.config_map_key_ref
        values = context.config_map(selector.name or "")
        what = f"ConfigMap {selector.name}"
    elif source.field_ref is not None:
        path = source.field_ref.field_path
        if path not in context.fields:
            raise PodSpecError(f"{where}: fieldRef {path} is not modelled")
        return str(context.fields[path])
    else:
        raise PodSpecError(f"{where}: this valueFrom is not modelled")
    if values is None or selector.key not in values:
        if selector.optional:
            return None
        missing = "missing" if values is None else f"without key {selector.key!r}"
        raise PodSpecError(f"{where}: refers to a {missing} {what}")
    return str(values[selector.key])


def _expand(text: str, environment: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return environment.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a matchLabels selector selects an object with these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def replicas(deployment: Manifest, manifests: Manifests) -> int:
    """How many pods a Deployment runs: its HPA's minimum if an HPA owns it."""
    name = deployment["metadata"]["name"]
    for hpa in manifests.of_kind("HorizontalPodAutoscaler"):
        spec = V2HorizontalPodAutoscaler.model_validate(hpa).spec
        assert spec is not None
        target = spec.scale_target_ref
        if target.kind == "Deployment" and target.name == name:
            return spec.min_replicas or 1
    parsed = V1Deployment.model_validate(deployment).spec
    assert parsed is not None
    return 1 if parsed.replicas is None else parsed.replicas


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    target_port: int | str
    node_port: int | None


def service_ports(service: Manifest) -> list[ServicePort]:
    spec = V1Service.model_validate(service).spec
    assert spec is not None
    ports: list[ServicePort] = []
    for port in spec.ports or []:
        ports.append(
            ServicePort(
                port.name,
                port.port,
                port.port if port.target_port is None else port.target_port,
                port.node_port,
            )
        )
    return ports


def service_selector(service: Manifest) -> dict[str, str]:
    spec = V1Service.model_validate(service).spec
    assert spec is not None
    return dict(spec.selector or {})


def workloads(manifests: Manifests) -> list[Manifest]:
    """Every rendered object that creates pods."""
    kinds: Sequence[str] = ("Deployment", "Job", "CronJob", "Pod")
    return [each for each in manifests if each["kind"] in kinds]
