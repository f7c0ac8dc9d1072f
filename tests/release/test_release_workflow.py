"""The release workflow, run here as far as it can be without a registry: its version
step on a simulated tag, then its packaging step with the tests' Helm; the chart it
would push must name the image it would push. actionlint, the workflow schema and
pinned actions are checked for every workflow in tests/chart/test_cluster_path.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.pods import pod_spec_of, workloads
from tests.chart.render import CHART, default_values, render
from tests.release.lockfile import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
BIN = Path(sys.executable).parent
PLACEHOLDER_REPOSITORY = "ghcr.io/repository_owner/iris"
# What GitHub would set for a push of the tag in a repository of this owner.
OWNER = "Example-Org"
SHA = "0123456789abcdef0123456789abcdef01234567"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")


def project_version() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version: str = project["version"]
    return version


def steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    found: list[dict[str, Any]] = job["steps"]
    return found


def step(uses: str = "", name: str = "") -> dict[str, Any]:
    (found,) = [
        each
        for each in steps()
        if (uses and uses in each.get("uses", ""))
        or (name and each.get("name") == name)
    ]
    return found


@dataclass(frozen=True)
class Run:
    """The workflow's expressions as GitHub would evaluate them for one tag."""

    tag: str
    outputs: dict[str, dict[str, str]]

    def context(self) -> dict[str, str]:
        values = {
            "github.sha": SHA,
            "github.server_url": "https://github.com",
            "github.repository": f"{OWNER}/iris",
            "github.actor": "releaser",
            "secrets.GITHUB_TOKEN": "token",
            "steps.image.outputs.digest": "sha256:" + "ab" * 32,
        }
        for step_id, outputs in self.outputs.items():
            for key, value in outputs.items():
                values[f"steps.{step_id}.outputs.{key}"] = value
        return values

    def evaluate(self, text: str) -> str:
        context = self.context()

        def value(match: re.Match[str]) -> str:
            assert match.group(1) in context, f"unknown expression {match.group(0)}"
            return context[match.group(1)]

        return EXPRESSION.sub(value, text)


def run_version_step(tag: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    version_step = step(name="Version and names from the tag")
    output = tmp_path / "github_output"
    output.write_text("")
    environment = {
        **os.environ,
        "GITHUB_REF_NAME": tag,
        "GITHUB_REPOSITORY_OWNER": OWNER,
        "GITHUB_OUTPUT": str(output),
    }
    # GitHub runs `bash -e {0}` with pipefail for a run step.
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", version_step["run"]],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The tag of pyproject.toml's version, through the version step."""
    tmp_path = tmp_path_factory.mktemp("release")
    tag = f"v{project_version()}"
    done = run_version_step(tag, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = dict(
        line.split("=", 1)
        for line in (tmp_path / "github_output").read_text().splitlines()
    )
    return Run(tag, {"release": outputs})


@pytest.fixture(scope="module")
def packaged(release: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaging step's command, run in a copy of the checkout with the tests'
    Helm as `helm`; returns the copy."""
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copy(REPO / "Makefile", checkout)
    shutil.copytree(CHART, checkout / "charts" / "iris")
    package = step(name="Package the chart")
    environment = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **{key: release.evaluate(value) for key, value in package["env"].items()},
    }
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", package["run"]],
        cwd=checkout,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return checkout


def test_the_workflow_runs_on_version_tags_with_the_permissions_it_needs() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the key `on` as True.
    assert workflow[True] == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
    }


def test_the_tag_names_the_version_and_the_owners_registry(release: Run) -> None:
    version = project_version()
    assert release.outputs["release"] == {
        "version": version,
        "image": "ghcr.io/example-org/iris",
        "charts": "oci://ghcr.io/example-org/charts",
    }


def test_a_tag_that_is_not_the_project_version_fails(tmp_path: Path) -> None:
    done = run_version_step("v99.0.0", tmp_path)
    assert done.returncode != 0
    assert "::error::tag v99.0.0" in done.stdout
    assert (tmp_path / "github_output").read_text() == ""


def test_the_image_is_built_for_both_platforms_with_attestations(
    release: Run,
) -> None:
    assert [s.get("uses", "").split("@")[0] for s in steps()][1:5] == [
        "",
        "docker/setup-qemu-action",
        "docker/setup-buildx-action",
        "docker/login-action",
    ]
    login = step(uses="docker/login-action")["with"]
    assert release.evaluate(login["registry"]) == "ghcr.io"
    build = step(uses="docker/build-push-action")
    assert build["id"] == "image"
    options = build["with"]
    assert set(options["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert options["push"] is True
    assert options["provenance"] == "mode=max"
    assert options["sbom"] is True
    version = project_version()
    assert release.evaluate(options["tags"]) == f"ghcr.io/example-org/iris:{version}"
    build_arguments = dict(
        line.split("=", 1) for line in release.evaluate(options["build-args"]).split()
    )
    assert build_arguments == {
        "VERSION": version,
        "REVISION": SHA,
        "SOURCE": f"https://github.com/{OWNER}/iris",
    }
    # The Dockerfile labels the image with each of them.
    dockerfile = (REPO / "Dockerfile").read_text()
    for name in build_arguments:
        assert f"ARG {name}=" in dockerfile
        assert f'="${name}"' in dockerfile


def test_the_packaged_chart_runs_the_pushed_image_at_the_tags_version(
    release: Run, packaged: Path
) -> None:
    version = project_version()
    push = step(name="Push and sign the chart")
    assert 'helm push "dist/iris-$VERSION.tgz" "$CHARTS"' in push["run"]
    assert release.evaluate(push["env"]["VERSION"]) == version
    archive = packaged / "dist" / f"iris-{version}.tgz"
    assert archive.is_file(), sorted(path.name for path in packaged.rglob("*.tgz"))
    with tarfile.open(archive) as chart:
        member = chart.extractfile("iris/Chart.yaml")
        assert member is not None
        metadata = yaml.safe_load(member.read())
    assert (metadata["version"], metadata["appVersion"]) == (version, version)
    manifests = render(chart=archive)
    images = {
        container.image
        for workload in workloads(manifests)
        for container in pod_spec_of(workload)[1].containers
        if "minio" not in str(container.image)
    }
    build = step(uses="docker/build-push-action")
    assert images == {release.evaluate(build["with"]["tags"])}


def test_both_are_signed_by_digest_keylessly(release: Run) -> None:
    names = [s.get("name") for s in steps()]
    assert names.index("Install cosign") < names.index("Sign the image")
    sign_image = step(name="Sign the image")
    assert sign_image["run"] == 'cosign sign --yes "$IMAGE"'
    assert release.evaluate(sign_image["env"]["IMAGE"]) == (
        "ghcr.io/example-org/iris@sha256:" + "ab" * 32
    )
    push = step(name="Push and sign the chart")["run"]
    assert 'cosign sign --yes "${CHARTS#oci://}/iris@$digest"' in push
    # No key: keyless signing needs none, and none may be configured.
    assert "--key" not in WORKFLOW.read_text()


def test_the_sources_version_chart_and_image_default_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == project_version()
    image = default_values()["image"]
    assert (image["repository"], image["tag"]) == (PLACEHOLDER_REPOSITORY, "")
    assert (REPO / "Makefile").read_text().count(
        f"PLACEHOLDER_REPOSITORY := {PLACEHOLDER_REPOSITORY}"
    ) == 1


def test_the_readme_installs_the_published_chart() -> None:
    readme = (REPO / "README.md").read_text()
    assert (
        f"helm install iris oci://ghcr.io/<owner>/charts/iris --version "
        f"{project_version()}"
    ) in readme
    assert "helm install iris ./charts/iris" in readme
