"""Rendered pods run as local processes, each pod a host of its own.

- Every pod gets a network namespace with its own IP, so two replicas both listen on
  their real container port. A "node" namespace routes between this machine and the
  pods (forwarding is switched on in that namespace only) and plays kube-proxy: each
  Service gets a ClusterIP, and a node port on the node's address, DNATed round-robin
  by nftables to its ready endpoints' IPs and target ports.
- Every container runs through ``container_entry``: a private mount namespace with a
  read-only root, its volumes bind-mounted at their mountPaths (a PersistentVolumeClaim
  is one directory shared by every pod that mounts it, owned as fsGroup would leave
  it), its user and groups, and exactly its environment plus what an image provides.
- /etc/hosts in each pod maps the Services' DNS names to their ClusterIPs.

Needs root and iproute2, nftables and util-linux.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chart.pods import Container, Pod, service_ports
from tests.chart.render import REPO, Manifests

TOOLS = ("ip", "nft", "unshare", "mount", "nsenter")
# The address block of this machine's test hosts: one /24 of it per cluster.
BLOCK = ipaddress.IPv4Network("10.201.0.0/16")
FIRST_CLUSTER_IP = 200


def unavailable() -> str | None:
    """Why pods cannot run here, or None."""
    if os.geteuid() != 0:
        return "network and mount namespaces need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (iproute2, nftables, util-linux)"
    return None


def _run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


# The container's /tmp, its emptyDir; nothing of this machine's /tmp.
CONTAINER_TMP = "/tmp"  # noqa: S108


def image_environment(pod: Pod) -> dict[str, str]:
    """What the image and the runtime put in every container's environment, as the
    Dockerfile's final stage sets it, with this venv's Python first on PATH."""
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    return {
        "PATH": path,
        "HOME": CONTAINER_TMP,
        "TMPDIR": CONTAINER_TMP,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONSAFEPATH": "1",
        "PYTHONUNBUFFERED": "1",
        "HOSTNAME": pod.name,
    }


# The image's WORKDIR, for a container that sets no workingDir.
IMAGE_WORKING_DIR = CONTAINER_TMP


def _traversable_directories() -> list[str]:
    """Directories on the way to this Python that other users cannot enter."""
    found = []
    for start in (Path(sys.executable).resolve(), Path(sys.base_prefix).resolve()):
        for directory in start.parents:
            if directory != Path("/") and not os.stat(directory).st_mode & 0o001:
                found.append(str(directory))
    return sorted(set(found))


@dataclass
class PodAddress:
    netns: str
    ip: str


@dataclass
class ServiceRecord:
    name: str
    cluster_ip: str
    manifest: dict[str, Any]
    endpoints: list[tuple[str, Pod]] = field(default_factory=list)


@dataclass(frozen=True)
class Termination:
    exit_code: int
    seconds: float
    killed: bool


class LocalContainer:
    """One container of a pod, running."""

    def __init__(
        self,
        pod: Pod,
        container: Container,
        address: PodAddress,
        process: subprocess.Popen[bytes],
        log_path: Path,
    ) -> None:
        self.pod = pod
        self.container = container
        self.address = address
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        port: int,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5,
    ) -> tuple[int, bytes]:
        """One HTTP request to this pod's IP, as the kubelet or a peer sends it."""
        connection = http.client.HTTPConnection(self.address.ip, port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def probe(self, kind: str) -> int:
        """The status the probe gets, 0 if it cannot connect or times out."""
        probe = self.container.probes[kind]
        try:
            return self.request(
                "GET", probe.path, probe.port, timeout=probe.timeout_seconds
            )[0]
        except OSError:
            return 0

    def exec(self, argv: Sequence[str], timeout: float) -> int:
        """Run a command in the container, as an exec hook runs: its namespaces, root,
        user and environment."""
        user = self.container.user
        group = self.container.group
        command = ["nsenter", "--target", str(self.process.pid)]
        command += ["--mount", "--net", "--root", "--wd", "--"]
        command += ["setpriv", "--no-new-privs"]
        if user is not None and group is not None:
            groups = ",".join(str(g) for g in _groups(self.pod, self.container))
            command += ["--reuid", str(user), "--regid", str(group), "--groups", groups]
        environment = {**image_environment(self.pod), **self.container.environment}
        done = subprocess.run(
            [*command, "--", *argv], env=environment, timeout=timeout, check=False
        )
        return done.returncode

    def terminate(self) -> Termination:
        """Stop the container as the kubelet does: preStop hook, SIGTERM, and SIGKILL
        when terminationGracePeriodSeconds runs out."""
        grace = self.pod.termination_grace_period_seconds
        started = time.monotonic()
        if self.container.pre_stop is not None and self.process.poll() is None:
            # A hook that outlasts the grace period is cut short, as the kubelet does.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.exec(self.container.pre_stop, timeout=grace)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        killed = False
        try:
            self.process.wait(timeout=max(0.0, grace - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            self.kill()
            killed = True
        return Termination(self.process.returncode, time.monotonic() - started, killed)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _groups(pod: Pod, container: Container) -> list[int]:
    groups = [container.group] if container.group is not None else []
    if pod.fs_group is not None:
        groups.append(pod.fs_group)
    return sorted(set(groups) | set(pod.supplemental_groups))


class Cluster:
    """A node namespace, the pods' namespaces, and the Services between them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tag = secrets.token_hex(3)
        self.node_netns = f"iris{self.tag}-node"
        self.subnet = self._free_subnet()
        hosts = list(self.subnet.hosts())
        # Block 0 of the /24 links this machine (.1) and the node (.2).
        self.host_ip, self.node_ip = str(hosts[0]), str(hosts[1])
        self.pod_netns: list[str] = []
        self.services: dict[str, ServiceRecord] = {}
        self.namespace = "default"
        self.containers: list[LocalContainer] = []
        self._host_link = f"ir{self.tag}h"
        _run("ip", "netns", "add", self.node_netns)
        try:
            self._link(self._host_link, None, "eth0", self.node_netns)
            self._address(None, self._host_link, self.host_ip)
            self._address(self.node_netns, "eth0", self.node_ip)
            _run("ip", "netns", "exec", self.node_netns, "sysctl", "-qw",
                 "net.ipv4.ip_forward=1")  # fmt: skip
            _run("ip", "route", "add", str(self.subnet), "via", self.node_ip)
            self._program_services()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        used = json.loads(_run("ip", "-4", "-json", "route", "show", "table", "all"))
        taken = set()
        for route in used:
            destination = route.get("dst", "")
            if destination.startswith("10.201."):
                taken.add(destination.split(".")[2])
        candidates = [
            n for n in BLOCK.subnets(new_prefix=24) if str(n).split(".")[2] not in taken
        ]
        return candidates[secrets.randbelow(len(candidates))]

    def _link(self, name: str, netns: str | None, peer: str, peer_netns: str) -> None:
        command = ["ip"]
        if netns is not None:
            command += ["-n", netns]
        _run(*command, "link", "add", name, "type", "veth", "peer", "name", peer,
             "netns", peer_netns)  # fmt: skip

    @staticmethod
    def _address(netns: str | None, device: str, ip: str) -> None:
        prefix = ["ip"] if netns is None else ["ip", "-n", netns]
        _run(*prefix, "addr", "add", f"{ip}/30", "dev", device)
        _run(*prefix, "link", "set", device, "up")
        _run(*prefix, "link", "set", "lo", "up")

    def add_pod_network(self) -> PodAddress:
        index = len(self.pod_netns) + 1
        block = list(self.subnet.subnets(new_prefix=30))[index]
        if int(block.network_address.packed[3]) + 4 > FIRST_CLUSTER_IP:
            raise RuntimeError("no room for another pod in this cluster")
        gateway, ip = (str(host) for host in block.hosts())
        netns = f"iris{self.tag}-{index}"
        _run("ip", "netns", "add", netns)
        self.pod_netns.append(netns)
        node_side = f"ir{self.tag}p{index}"
        self._link(node_side, self.node_netns, "eth0", netns)
        self._address(self.node_netns, node_side, gateway)
        self._address(netns, "eth0", ip)
        _run("ip", "-n", netns, "route", "add", "default", "via", gateway)
        return PodAddress(netns, ip)

    def add_services(self, manifests: Manifests) -> None:
        """A ClusterIP, with no endpoints yet, for every rendered Service."""
        for service in manifests.of_kind("Service"):
            name = service["metadata"]["name"]
            self.namespace = service["metadata"].get("namespace", "default")
            address = (
                self.subnet.network_address + FIRST_CLUSTER_IP + len(self.services)
            )
            self.services[name] = ServiceRecord(name, str(address), service)
        self._program_services()

    def set_endpoints(self, service: str, endpoints: Iterable[tuple[str, Pod]]) -> None:
        """Route a Service to these ready pods (IP, pod), as an EndpointSlice does."""
        self.services[service].endpoints = list(endpoints)
        self._program_services()

    def _program_services(self) -> None:
        rules = []
        for record in self.services.values():
            for port in service_ports(record.manifest):
                targets = [
                    f"{ip} . {pod.named_port(port.target_port)}"
                    for ip, pod in record.endpoints
                ]
                if not targets:
                    continue
                mapping = ", ".join(f"{i} : {t}" for i, t in enumerate(targets))
                dnat = (
                    f"dnat ip addr . port to numgen inc mod {len(targets)} "
                    f"map {{ {mapping} }}"
                )
                # One rule, so the ClusterIP and the node port share one round-robin.
                destinations = [f"{record.cluster_ip} . {port.port}"]
                if port.node_port is not None:
                    destinations.append(f"{self.node_ip} . {port.node_port}")
                matched = f"ip daddr . tcp dport {{ {', '.join(destinations)} }}"
                rules.append(f"{matched} {dnat}")
        ruleset = "flush ruleset\ntable ip services {\n"
        ruleset += " chain prerouting {\n  type nat hook prerouting priority -100;\n"
        ruleset += "".join(f"  {rule}\n" for rule in rules)
        # A pod reaching itself through its Service (hairpin) needs its source changed.
        ruleset += (
            " }\n chain postrouting {\n  type nat hook postrouting priority 100;\n"
        )
        ruleset += "  ct status dnat masquerade\n }\n}\n"
        _run("ip", "netns", "exec", self.node_netns, "nft", "-f", "-", stdin=ruleset)

    def service_url(self, name: str, port_name: str, path: str) -> tuple[str, int, str]:
        record = self.services[name]
        port = next(p for p in service_ports(record.manifest) if p.name == port_name)
        return record.cluster_ip, port.port, path

    def node_port(self, name: str, port_name: str) -> tuple[str, int]:
        port = next(
            p
            for p in service_ports(self.services[name].manifest)
            if p.name == port_name
        )
        assert port.node_port is not None, f"Service {name} has no node port"
        return self.node_ip, port.node_port

    def hosts(self, pod_name: str, pod_ip: str) -> str:
        lines = ["127.0.0.1\tlocalhost", f"{pod_ip}\t{pod_name}"]
        for record in self.services.values():
            name, namespace = record.name, self.namespace
            names = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc"]
            names.append(f"{name}.{namespace}.svc.cluster.local")
            lines.append(f"{record.cluster_ip}\t{' '.join(names)}")
        return "\n".join(lines) + "\n"

    def volume(self, pod: Pod, volume: str, kind: str, claim: str | None) -> Path:
        """The directory behind a volume: one per claim, shared by the pods that mount
        it, or one per pod for an emptyDir; owned as fsGroup would leave it."""
        if kind == "persistentVolumeClaim":
            assert claim is not None
            path = self.workdir / "claims" / claim
        else:
            path = self.workdir / "pods" / pod.name / volume
        if not path.exists():
            path.mkdir(parents=True)
            shared = 0o777 if kind == "emptyDir" else 0o755
            if pod.fs_group is not None:
                os.chown(path, 0, pod.fs_group)
                path.chmod(0o2000 | shared | 0o070)
            else:
                path.chmod(shared)
        return path

    def start(
        self,
        pod: Pod,
        container: Container,
        address: PodAddress,
        argv: Sequence[str] | None = None,
        extra_environment: Mapping[str, str] | None = None,
    ) -> LocalContainer:
        """Start a container; ``argv`` replaces its program (a stand-in for an image
        this machine cannot run), ``python`` is this venv's Python."""
        command = list(argv if argv is not None else container.argv)
        if not command:
            raise RuntimeError(f"{pod.name}/{container.name} has no command to run")
        if command[0] == "python":
            command[0] = sys.executable
        stage = self.workdir / "stage" / f"{pod.name}-{container.name}"
        for part in ("layer", "root", "upper"):
            (stage / part).mkdir(parents=True)
        spec = {
            "stage": str(stage),
            "traversable": _traversable_directories(),
            "image": sorted({str(REPO), sys.prefix}),
            "mounts": [
                {
                    "source": str(self.volume(pod, m.volume, m.kind, m.claim)),
                    "path": m.path,
                    "read_only": m.read_only,
                }
                for m in container.mounts
            ],
            "hosts": self.hosts(pod.name, address.ip),
            "hostname": pod.name,
            "read_only_root": container.read_only_root,
            "working_dir": container.working_dir or IMAGE_WORKING_DIR,
            "user": container.user,
            "group": container.group,
            "groups": _groups(pod, container) if container.user is not None else None,
            "no_new_privileges": container.no_new_privileges,
            "drop_all_capabilities": "ALL" in container.dropped_capabilities,
            "argv": command,
            "environment": {
                **image_environment(pod),
                **container.environment,
                **(extra_environment or {}),
            },
        }
        spec_path = stage / "spec.json"
        spec_path.touch(mode=0o600)
        spec_path.write_text(json.dumps(spec))
        log_path = self.workdir / "logs" / f"{pod.name}-{container.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    *("ip", "netns", "exec", address.netns),
                    *("unshare", "--mount", "--propagation", "private", "--"),
                    *(sys.executable, "-m", "tests.chart.container_entry"),
                    str(spec_path),
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = LocalContainer(pod, container, address, process, log_path)
        self.containers.append(running)
        return running

    def close(self) -> None:
        for container in self.containers:
            container.kill()
        for netns in [*self.pod_netns, self.node_netns]:
            subprocess.run(["ip", "netns", "delete", netns], check=False)
        # Deleting the node namespace deletes the host's end of its link and the route.
