"""Containers described as a pod spec describes them, and run with podman.

A ``ContainerSpec`` holds what a Kubernetes container and its pod's volumes and
securityContext say, reduced to what ``podman run`` needs, so a test can take one
from a rendered Job or Deployment as easily as write one by hand.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.chart.pods import Pod


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    # As in Kubernetes: command replaces the image's ENTRYPOINT, args its CMD.
    command: Sequence[str] = ()
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # host directory -> path in the container (a PVC or hostPath volume)
    mounts: Mapping[str, str] = field(default_factory=dict)
    # container paths of the mounts above that are mounted read-only
    read_only_mounts: frozenset[str] = frozenset()
    # writable in-memory directories (emptyDir volumes)
    tmpfs: Sequence[str] = ("/tmp",)  # noqa: S108 - a path in the container
    # host port on 127.0.0.1 -> container port
    ports: Mapping[int, int] = field(default_factory=dict)
    working_dir: str | None = None
    # securityContext: runAsUser:runAsGroup, readOnlyRootFilesystem,
    # capabilities.drop [ALL], allowPrivilegeEscalation false
    user: str | None = "1000:1000"
    read_only: bool = True
    drop_all_capabilities: bool = True
    no_new_privileges: bool = True
    # "host" shares the host's network, to reach a server bound to its 127.0.0.1.
    network: str | None = None

    def run_arguments(self) -> list[str]:
        """The ``podman run`` arguments, without the container's name."""
        arguments = ["--pull=never"]
        if self.user is not None:
            arguments += ["--user", self.user]
        if self.read_only:
            arguments.append("--read-only")
        if self.drop_all_capabilities:
            arguments += ["--cap-drop", "ALL"]
        if self.no_new_privileges:
            arguments += ["--security-opt", "no-new-privileges"]
        if self.network is not None:
            arguments += ["--network", self.network]
        for path in self.tmpfs:
            arguments += ["--tmpfs", path]
        for host_dir, path in self.mounts.items():
            mode = "ro" if path in self.read_only_mounts else "rw"
            arguments += ["--volume", f"{host_dir}:{path}:{mode}"]
        for host_port, port in self.ports.items():
            arguments += ["--publish", f"127.0.0.1:{host_port}:{port}"]
        for name, value in self.env.items():
            arguments += ["--env", f"{name}={value}"]
        if self.working_dir is not None:
            arguments += ["--workdir", self.working_dir]
        if self.command:
            arguments += ["--entrypoint", json.dumps(list(self.command))]
        return [*arguments, self.image, *self.args]


def from_pod(
    pod: Pod, claims: Mapping[str, str], ports: Mapping[int, str] | None = None
) -> ContainerSpec:
    """A rendered pod's one container, as podman runs it.

    ``claims`` maps each PersistentVolumeClaim to the host directory standing in for
    it; emptyDir volumes become tmpfs mounts; ``ports`` maps host ports to the
    container's ports, by number or by name.
    """
    container = pod.container()
    mounts: dict[str, str] = {}
    read_only: set[str] = set()
    tmpfs: list[str] = []
    for mount in container.mounts:
        if mount.kind == "emptyDir":
            tmpfs.append(mount.path)
        elif mount.claim is not None:
            mounts[claims[mount.claim]] = mount.path
            if mount.read_only:
                read_only.add(mount.path)
        else:
            raise ValueError(f"{pod.name}: cannot run a {mount.kind} volume")
    user = (
        None if container.user is None else f"{container.user}:{container.group or 0}"
    )
    return ContainerSpec(
        image=container.image,
        command=container.argv,
        env=dict(container.environment),
        mounts=mounts,
        read_only_mounts=frozenset(read_only),
        tmpfs=tmpfs,
        ports={host: container.port(port) for host, port in (ports or {}).items()},
        working_dir=container.working_dir,
        user=user,
        read_only=container.read_only_root,
        drop_all_capabilities="ALL" in container.dropped_capabilities,
        no_new_privileges=container.no_new_privileges,
    )


@dataclass(frozen=True)
class Exited:
    status: int
    stdout: str
    stderr: str


class Podman:
    """The podman command with this host's configuration (CONTAINERS_CONF)."""

    def __init__(self, executable: str, environment: Mapping[str, str]) -> None:
        self.executable = executable
        self.environment = dict(environment)

    def __call__(
        self, *arguments: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [self.executable, *arguments],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and completed.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(arguments)} exited {completed.returncode}:\n"
                f"{completed.stdout}{completed.stderr}"
            )
        return completed

    def run(self, name: str, spec: ContainerSpec, timeout: float = 300) -> Exited:
        """Run a container to its end, as a Job's pod runs; it is removed after."""
        try:
            completed = self(
                "run", "--rm", "--name", name, *spec.run_arguments(),
                timeout=timeout, check=False,
            )  # fmt: skip
        finally:
            self.remove(name)
        return Exited(completed.returncode, completed.stdout, completed.stderr)

    def start(self, name: str, spec: ContainerSpec) -> RunningContainer:
        """Start a container in the background, as a Deployment's pod runs."""
        self("run", "--detach", "--name", name, *spec.run_arguments())
        return RunningContainer(self, name)

    def remove(self, name: str) -> None:
        """Remove a container this test started, at once, whatever its state."""
        self("rm", "--force", "--ignore", "--time", "0", name, check=False)


@dataclass(frozen=True)
class RunningContainer:
    podman: Podman
    name: str

    def exec(self, *command: str) -> Exited:
        completed = self.podman("exec", self.name, *command, check=False)
        return Exited(completed.returncode, completed.stdout, completed.stderr)

    def running(self) -> bool:
        state = self.podman("inspect", "--format", "{{.State.Running}}", self.name)
        return state.stdout.strip() == "true"

    def exit_status(self) -> int:
        state = self.podman("inspect", "--format", "{{.State.ExitCode}}", self.name)
        return int(state.stdout)

    def logs(self) -> str:
        completed = self.podman("logs", self.name, check=False)
        return completed.stdout + completed.stderr

    def stop(self, grace_seconds: int = 30) -> tuple[int, float]:
        """SIGTERM, as the kubelet sends it, then SIGKILL after the grace period.

        Returns the exit status and the seconds the container took to stop.
        """
        started = time.monotonic()
        self.podman(
            "stop", "--time", str(grace_seconds), self.name, timeout=grace_seconds + 60
        )
        return self.exit_status(), time.monotonic() - started

    def remove(self) -> None:
        self.podman.remove(self.name)
