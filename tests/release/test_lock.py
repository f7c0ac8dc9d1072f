"""The lock files in requirements/ agree with pyproject.toml, and every install reads
them with hashes: the development venv, the image and its SBOM stage."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.release.locked import ENVIRONMENTS, environment, pinned
from tests.release.lockfile import IMAGE_PLATFORMS, LOCKS, REPO, pins, stale_locks


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(each) for each in listed]


def test_every_lock_records_the_fingerprint_of_its_inputs() -> None:
    assert stale_locks() == [], "pyproject.toml or requirements/*.in changed: make lock"


def copy_of_the_inputs(tmp_path: Path) -> Path:
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    assert stale_locks(tmp_path) == []
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


EDITS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "a new runtime dependency": (
        lambda root: edit(
            root / "pyproject.toml", "dependencies = [", 'dependencies = [\n  "rich",'
        ),
        ["runtime.txt", "dev.txt"],
    ),
    "a narrowed runtime range": (
        lambda root: edit(
            root / "pyproject.toml", '"numpy~=2.2"', '"numpy~=2.2, <2.3"'
        ),
        ["runtime.txt", "dev.txt"],
    ),
    "a new test dependency": (
        lambda root: edit(root / "pyproject.toml", "test = [", 'test = [\n  "rich",'),
        ["dev.txt"],
    ),
    "a newer Python": (
        lambda root: edit(root / "pyproject.toml", '">=3.11"', '">=3.12"'),
        ["runtime.txt", "dev.txt"],
    ),
    "a runtime lock regenerated alone": (
        lambda root: edit(root / "requirements" / "runtime.txt", "\n", "\n# moved\n"),
        ["dev.txt"],
    ),
    "a new checkov": (
        lambda root: edit(
            root / "requirements" / "checkov.in", "checkov==", "checkov>="
        ),
        ["checkov.txt"],
    ),
    "a new SBOM tool": (
        lambda root: edit(
            root / "requirements" / "sbom.in", "cyclonedx-bom==", "cyclonedx-bom>="
        ),
        ["sbom.txt"],
    ),
}


@pytest.mark.parametrize("change", EDITS)
def test_a_change_to_the_inputs_makes_exactly_its_locks_stale(
    change: str, tmp_path: Path
) -> None:
    apply, expected = EDITS[change]
    root = copy_of_the_inputs(tmp_path)
    apply(root)
    assert stale_locks(root) == expected


def test_formatting_pyproject_elsewhere_keeps_the_locks_fresh(tmp_path: Path) -> None:
    root = copy_of_the_inputs(tmp_path)
    edit(root / "pyproject.toml", "line-length = 88", "line-length = 100")
    assert stale_locks(root) == []


@pytest.mark.parametrize(
    ("lock_name", "extras"),
    [("runtime.txt", ()), ("dev.txt", ("test", "lint"))],
)
@pytest.mark.parametrize("values", ENVIRONMENTS, ids=str)
def test_each_lock_pins_versions_pyproject_allows(
    lock_name: str, extras: tuple[str, ...], values: dict[str, str]
) -> None:
    locked = pinned(lock_name, values)
    for requirement in project_requirements(extras):
        if requirement.marker and not requirement.marker.evaluate(environment(values)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock_name} has no pin of {requirement}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock_name} pins {name}=={locked[name]}, pyproject asks {requirement}"
        )


@pytest.mark.parametrize("values", ENVIRONMENTS, ids=str)
def test_the_dev_lock_keeps_every_runtime_pin(values: dict[str, str]) -> None:
    runtime, dev = pinned("runtime.txt", values), pinned("dev.txt", values)
    assert {name: dev.get(name) for name in runtime} == runtime


@pytest.mark.parametrize("lock_name", LOCKS)
def test_every_pin_has_hashes(lock_name: str) -> None:
    found = pins(LOCKS[lock_name].path())
    assert found
    text = LOCKS[lock_name].path().read_text()
    # Every requirement line was parsed: none is left without its hashes.
    assert len(found) == len(re.findall(r"^[A-Za-z0-9]\S*==", text, re.MULTILINE))
    assert [pin.name for pin in found if not pin.hashes] == []


def make_dry_run(*arguments: str) -> list[str]:
    """The shell commands make would run, one per line, as if nothing were built."""
    done = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.replace("\\\n", " ").splitlines()


def installs(target: str) -> list[list[str]]:
    """The arguments of each install make would run to build target."""
    return [
        shlex.split(command)
        for command in make_dry_run(target)
        if "pip install" in command
    ]


# pip installs uv from its lock; uv installs every venv from its lock, into that
# venv's own Python.
UV_FROM_ITS_LOCK = [
    ".venv-uv/bin/pip", "install", "--quiet",
    "--require-hashes", "--requirement", "requirements/uv.txt",
]  # fmt: skip


def uv_install(venv: str, *arguments: str) -> list[str]:
    return [
        ".venv-uv/bin/uv", "pip", "install", "--quiet", "--native-tls",
        "--compile-bytecode", "--python", f"{venv}/bin/python", *arguments,
    ]  # fmt: skip


def test_the_venv_installs_the_dev_lock_with_hashes_and_the_project_alone() -> None:
    dev_lock = ["--require-hashes", "--requirement", "requirements/dev.txt"]
    project = ["--no-deps", "--no-build-isolation", "--editable", "."]
    assert installs("venv") == [
        UV_FROM_ITS_LOCK,
        uv_install(".venv", *dev_lock),
        uv_install(".venv", *project),
    ]


@pytest.mark.parametrize(
    ("venv", "lock_name"),
    [(".venv-checkov", "checkov.txt"), (".venv-mlflow", "mlflow.txt")],
)
def test_a_tool_venv_installs_its_lock_with_hashes(venv: str, lock_name: str) -> None:
    lock = LOCKS[lock_name].relative_path
    assert installs(f"{venv}/.installed") == [
        UV_FROM_ITS_LOCK,
        uv_install(venv, "--require-hashes", "--requirement", lock),
    ]


def test_make_lock_writes_every_lock() -> None:
    (command,) = [c for c in make_dry_run("lock") if "tests.release.lockfile" in c]
    assert shlex.split(command)[1:3] == ["-m", "tests.release.lockfile"]


def dockerfile_runs() -> list[str]:
    text = (REPO / "Dockerfile").read_text()
    return [
        " ".join(line.strip() for line in block.splitlines())
        for block in re.split(r"\n(?=[A-Z]+ )", text.replace("\\\n", " "))
        if block.startswith("RUN ")
    ]


def test_the_image_installs_its_locks_with_hashes_and_wheels_only() -> None:
    installs = [run for run in dockerfile_runs() if " install " in run]
    runtime = [run for run in installs if "runtime.txt" in run]
    sbom = [run for run in installs if "sbom.txt" in run]
    assert runtime
    assert len(sbom) == 1
    for run in runtime + sbom:
        assert "--require-hashes" in run
        assert "--only-binary=:all:" in run
    # The project: no dependencies, and the locked setuptools as its build backend.
    (project,) = [run for run in installs if " --no-deps " in run]
    assert "--no-build-isolation" in project
    # Compiled from source only where lockfile.py's platform check allows it.
    compiled = {name for names in IMAGE_PLATFORMS.values() for name in names}
    assert {
        name for run in runtime for name in re.findall(r"--no-binary=(\w[\w.-]*)", run)
    } == compiled
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!requirements/runtime.txt" in dockerignore
    assert "!requirements/sbom.txt" in dockerignore
