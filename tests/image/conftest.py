"""The project's image, built with podman from the unmodified Dockerfile.

Without podman these tests skip, unless IRIS_REQUIRE_IMAGE=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import NoReturn

import pytest

from tests.image.podman import Podman

HERE = Path(__file__).parent
IMAGE = os.environ.get("IRIS_IMAGE", "localhost/iris:test")
BASE_IMAGE = os.environ.get("BASE_IMAGE", "docker.io/library/python:3.11-slim")
BUILD_TIMEOUT_SECONDS = 840
REPO = HERE.parents[1]


def head_revision() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


# The OCI labels' build arguments, as the release workflow passes them.
BUILD_ARGUMENTS = {
    "VERSION": tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "version"
    ],
    "REVISION": head_revision(),
    "SOURCE": "https://github.com/repository_owner/iris",
}


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("IRIS_REQUIRE_IMAGE") == "1":
        pytest.fail(f"{reason}, and IRIS_REQUIRE_IMAGE=1", pytrace=False)
    pytest.skip(f"{reason} (apt-get install -y podman runc mmdebstrap)")


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """podman, configured for this host unless CONTAINERS_CONF names a file."""
    executable = shutil.which("podman")
    if executable is None:
        unavailable("podman is not installed")
    environment = dict(os.environ)
    if "CONTAINERS_CONF" not in environment:
        conf = tmp_path_factory.mktemp("podman") / "containers.conf"
        subprocess.run([HERE / "containers-conf.sh", conf], check=True)
        environment["CONTAINERS_CONF"] = str(conf)
    podman = Podman(executable, environment)
    if (
        podman("image", "exists", BASE_IMAGE, check=False).returncode != 0
        and shutil.which("mmdebstrap") is None
    ):
        unavailable(f"mmdebstrap is not installed and there is no {BASE_IMAGE}")
    return podman


@pytest.fixture(scope="session")
def image(
    podman: Podman,
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The image of this checkout, built by build.sh, which reuses the base image and
    the layer cache. With -s (as `make test-image` runs) its output shows as it goes;
    otherwise it goes to a log, shown if the build fails."""
    environment = {
        **podman.environment,
        "IRIS_IMAGE": IMAGE,
        "BASE_IMAGE": BASE_IMAGE,
        "BUILD_ARGUMENTS": " ".join(
            f"--build-arg={name}={value}" for name, value in BUILD_ARGUMENTS.items()
        ),
    }
    if pytestconfig.getoption("capture") == "no":
        status = subprocess.run(
            [HERE / "build.sh"], env=environment, timeout=BUILD_TIMEOUT_SECONDS
        ).returncode
        output = "(its output is above)"
    else:
        log_path = tmp_path_factory.mktemp("build") / "build.log"
        with log_path.open("wb") as log:
            status = subprocess.run(
                [HERE / "build.sh"],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_SECONDS,
            ).returncode
        output = log_path.read_text(errors="replace")[-6000:]
    if status != 0:
        pytest.fail(f"tests/image/build.sh exited {status}:\n{output}", pytrace=False)
    return IMAGE
