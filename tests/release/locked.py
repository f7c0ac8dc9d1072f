"""What a lock file pins in a given environment (its markers evaluated)."""

from __future__ import annotations

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.release.lockfile import LOCKS, pins

# The image as tests/image builds it (linux/amd64, Python 3.11).
IMAGE_ENVIRONMENT = {"python_full_version": "3.11.14", "platform_machine": "x86_64"}
# The image's two platforms, and a newer Python on a developer's machine.
ENVIRONMENTS = [
    IMAGE_ENVIRONMENT,
    {"python_full_version": "3.11.14", "platform_machine": "aarch64"},
    {"python_full_version": "3.13.9", "platform_machine": "x86_64"},
]


def environment(values: dict[str, str]) -> dict[str, str]:
    full = values["python_full_version"]
    return {
        "python_full_version": full,
        "python_version": ".".join(full.split(".")[:2]),
        "platform_machine": values["platform_machine"],
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def pinned(lock_name: str, values: dict[str, str]) -> dict[str, str]:
    """name -> version of a lock's pins that apply in that environment."""
    where = environment(values)
    found: dict[str, str] = {}
    for pin in pins(LOCKS[lock_name].path()):
        if not pin.marker or Marker(pin.marker).evaluate(where):
            name = canonicalize_name(pin.name)
            if name in found:
                raise ValueError(f"{lock_name}: {name} pinned twice for {where}")
            found[name] = pin.version
    return found
