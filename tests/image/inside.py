"""Run inside a container (`python -c`): what its process and filesystem allow.

Prints one JSON object; tests/image/test_image.py asserts on it.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil

WRITE_TARGETS = ["/", "/opt/venv", "/models", "/tmp"]  # noqa: S108 - in the container
TOOLS = ["gcc", "cc", "c++", "g++", "clang", "as", "ld", "strip", "make"]
MODEL_SUFFIXES = (".skops", ".joblib", ".pkl", ".pickle")
IMAGE_DIRS = ["/opt", "/usr", "/etc", "/root", "/home", "/srv"]


def ids(field: str) -> list[str]:
    """Real, effective, saved and filesystem ids of PID 1, the server."""
    with open("/proc/1/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return line.split()[1:]
    raise LookupError(field)


def mount_options(path: str) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        options = {line.split()[1]: line.split()[3] for line in mounts}
    return options[path].split(",")


def write(directory: str) -> str:
    """'written', or the errno name of the failure."""
    try:
        with open(os.path.join(directory, "probe"), "w") as file:
            file.write("x")
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    return "written"


def model_files() -> list[str]:
    return [
        os.path.join(top, name)
        for root in IMAGE_DIRS
        for top, _, names in os.walk(root)
        for name in names
        if name.endswith(MODEL_SUFFIXES)
    ]


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "uid": ids("Uid"),
                "gid": ids("Gid"),
                "root_options": mount_options("/"),
                "writes": {path: write(path) for path in WRITE_TARGETS},
                "tools": [tool for tool in TOOLS if shutil.which(tool)],
                "pip_in_venv": importlib.util.find_spec("pip") is not None,
                # The SBOM generator runs in a build stage only.
                "sbom_tool": importlib.util.find_spec("cyclonedx") is not None
                or os.path.exists("/opt/sbom-tool"),
                "model_files": model_files(),
            }
        )
    )
