"""The lock files in requirements/: what each is made from, how uv makes it, and the
fingerprint of its inputs that each records on its first line.

``make lock`` runs ``python -m tests.release.lockfile UV [UV_FLAGS...]``; the tests
recompute each fingerprint, so a pyproject.toml edited without ``make lock`` fails
``make test``. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = "requirements"
FINGERPRINT = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ; (.+?))? \\$")
HASH = re.compile(r"^ +--hash=sha256:([0-9a-f]{64})(?: \\)?$")
# The image's Python; --universal adds markers for every platform and newer Pythons,
# and --generate-hashes records every file of each pin (amd64 and arm64 wheels alike).
UV_COMPILE = [
    "pip",
    "compile",
    "--universal",
    "--python-version",
    "3.11",
    "--generate-hashes",
    "--default-index",
    "https://pypi.org/simple",
    "--custom-compile-command",
    "make lock",
    "--quiet",
]
# The image's platforms (uv's names), and the pins the Dockerfile compiles there
# because they have no wheel for it: psutil 5.9 (kserve requires <6) has none for
# arm64. Every other pin must have a wheel: the Dockerfile installs wheels only.
IMAGE_PLATFORMS: dict[str, tuple[str, ...]] = {
    "x86_64-manylinux_2_28": (),
    "aarch64-manylinux_2_28": ("psutil",),
}


@dataclass(frozen=True)
class Lock:
    name: str
    # Where its requirements come from: pyproject.toml's dependencies (and extras),
    # or a .in file in requirements/.
    source: str
    extras: tuple[str, ...] = ()
    # Locks whose pins this one must keep (passed to uv as --constraint).
    constraints: tuple[str, ...] = ()
    # Its pins are installed into the image, so each needs a wheel for each platform.
    in_image: bool = False

    @property
    def relative_path(self) -> str:
        return f"{REQUIREMENTS}/{self.name}"

    def path(self, repo: Path = REPO) -> Path:
        return repo / self.relative_path

    def inputs(self, repo: Path = REPO) -> dict[str, object]:
        """Everything the lock is made from: a change to any of it makes it stale."""
        inputs: dict[str, object] = {"uv": UV_COMPILE, "extras": list(self.extras)}
        if self.source == "pyproject.toml":
            project = tomllib.loads((repo / self.source).read_text())["project"]
            optional = project.get("optional-dependencies", {})
            inputs["requires-python"] = project.get("requires-python")
            inputs["dependencies"] = project.get("dependencies", [])
            inputs["optional"] = {extra: optional.get(extra) for extra in self.extras}
        else:
            inputs["source"] = (repo / self.source).read_text()
        inputs["constraints"] = {
            name: sha256(LOCKS[name].path(repo).read_bytes())
            for name in self.constraints
        }
        return inputs

    def fingerprint(self, repo: Path = REPO) -> str:
        return sha256(json.dumps(self.inputs(repo), sort_keys=True).encode())

    def recorded_fingerprint(self, repo: Path = REPO) -> str | None:
        path = self.path(repo)
        if not path.is_file():
            return None
        first_line = path.read_text().partition("\n")[0]
        match = FINGERPRINT.match(first_line)
        return match.group(1) if match else None

    def compile_arguments(self) -> list[str]:
        """uv's arguments, with paths relative to the repository: uv writes them into
        the lock's comments."""
        arguments = [*UV_COMPILE, self.source, "--output-file", self.relative_path]
        for extra in self.extras:
            arguments += ["--extra", extra]
        for name in self.constraints:
            arguments += ["--constraint", LOCKS[name].relative_path]
        return arguments


LOCKS = {
    lock.name: lock
    for lock in [
        Lock("runtime.txt", "pyproject.toml", in_image=True),
        Lock(
            "dev.txt",
            "pyproject.toml",
            extras=("test", "lint"),
            constraints=("runtime.txt",),
        ),
        Lock("sbom.txt", f"{REQUIREMENTS}/sbom.in", in_image=True),
        Lock("checkov.txt", f"{REQUIREMENTS}/checkov.in"),
        Lock("mlflow.txt", f"{REQUIREMENTS}/mlflow.in"),
        Lock("uv.txt", f"{REQUIREMENTS}/uv.in"),
    ]
}


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    # The environment marker uv wrote ("" for every environment).
    marker: str
    hashes: tuple[str, ...]


def pins(path: Path) -> list[Pin]:
    """The pins of a lock file as uv writes them: name==version [; marker] \\ then
    one --hash line per file."""
    found: list[Pin] = []
    for line in path.read_text().splitlines():
        if pin := PIN.match(line):
            name, version, marker = pin.groups()
            found.append(Pin(name, version, marker or "", ()))
        elif (digest := HASH.match(line)) and found:
            last = found[-1]
            found[-1] = Pin(
                last.name, last.version, last.marker, (*last.hashes, digest.group(1))
            )
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stale_locks(repo: Path = REPO) -> list[str]:
    """The lock files whose recorded fingerprint is not that of their inputs now."""
    return [
        lock.name
        for lock in LOCKS.values()
        if lock.recorded_fingerprint(repo) != lock.fingerprint(repo)
    ]


def write_locks(uv: str, uv_flags: list[str], repo: Path = REPO) -> None:
    """Compile every lock in order (constraints first), keeping each pin that still
    fits (uv prefers the versions already in the output file), then record each
    lock's fingerprint and check the image's pins have wheels for both platforms."""
    for lock in LOCKS.values():
        path = lock.path(repo)
        subprocess.run([uv, *lock.compile_arguments(), *uv_flags], cwd=repo, check=True)
        body = "".join(
            line
            for line in path.read_text().splitlines(keepends=True)
            if not FINGERPRINT.match(line.rstrip("\n"))
        )
        path.write_text(f"# inputs-sha256: {lock.fingerprint(repo)}\n{body}")
        if lock.in_image:
            for platform, compiled in IMAGE_PLATFORMS.items():
                # Resolves the pins alone for that platform, wheels only: fails
                # naming any pin that has no wheel for it.
                subprocess.run(
                    [
                        uv, "pip", "compile", "--quiet", "--no-deps",
                        "--python-version", "3.11", "--python-platform", platform,
                        "--only-binary", ":all:",
                        *[f"--no-binary={name}" for name in compiled],
                        "--default-index", "https://pypi.org/simple",
                        "--no-header", "--output-file", "/dev/null",
                        lock.relative_path,
                    ],
                    cwd=repo,
                    check=True,
                )  # fmt: skip


if __name__ == "__main__":
    write_locks(sys.argv[1], sys.argv[2:])
