"""The image trains and serves from its containers, as the chart runs them.

The chart is rendered with this image; its training Job's pod runs from the image
and publishes into a host directory standing in for the PVC, then two pods of its
Deployment serve it, each on its own port: the rendered command, arguments,
environment, mounts and securityContext (UID 1000, read-only root filesystem, /tmp
an emptyDir, no capabilities, no privilege escalation), nothing written by hand.
The last test stops the replicas as the kubelet would. The Job's pod also runs with
the chart's MLflow tracking set, against a real MLflow server on the host.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient
from packaging.utils import canonicalize_name

from tests.chart.pods import Pod, describe
from tests.chart.render import Manifests, render
from tests.conftest import free_port
from tests.image.conftest import BUILD_ARGUMENTS, REPO
from tests.image.podman import (
    ContainerSpec,
    Exited,
    Podman,
    RunningContainer,
    from_pod,
)
from tests.release.locked import IMAGE_ENVIRONMENT, pinned
from training.gate import ExitCode
from training.tracking import CHAMPION_ALIAS, CV_SCORES_METRIC, STORE_VERSION_TAG

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
UID = 1000
READY_TIMEOUT_SECONDS = 180
# Run in a container with `python -c`; prints what the container allows, as JSON.
INSIDE = (Path(__file__).parent / "inside.py").read_text()
# Where the Dockerfile puts the SBOM (README, "The image").
SBOM_PATH = "/usr/share/sbom/iris.cdx.json"


@dataclass(frozen=True)
class Published:
    run: Exited
    root: Path

    def version(self) -> str:
        pointer = json.loads((self.root / "latest.json").read_text())
        return str(pointer["version"])


@dataclass(frozen=True)
class Replica:
    container: RunningContainer
    url: str
    pod: Pod


@pytest.fixture(scope="module")
def run_id() -> str:
    """Names this run's containers, so only they are ever stopped or removed."""
    return f"iris-image-test-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def manifests(image: str) -> Manifests:
    """The chart as it would run this image (PVC mode)."""
    repository, _, tag = image.rpartition(":")
    return render({"image": {"repository": repository, "tag": tag}})


@pytest.fixture(scope="module")
def claim(manifests: Manifests, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory standing in for the chart's models PVC."""
    root = tmp_path_factory.mktemp("pvc")
    # What fsGroup does for a PVC: the volume is writable by the pod's user.
    os.chown(root, UID, UID)
    return root


def claims(manifests: Manifests, root: Path) -> dict[str, str]:
    (claim,) = manifests.of_kind("PersistentVolumeClaim")
    return {claim["metadata"]["name"]: str(root)}


@pytest.fixture(scope="module")
def published(
    podman: Podman, image: str, run_id: str, manifests: Manifests, claim: Path
) -> Published:
    """The rendered training Job's pod, run to its end from the image."""
    job = describe(manifests.get("Job"), manifests)
    spec = from_pod(job, claims(manifests, claim))
    assert spec.image == image
    return Published(podman.run(f"{run_id}-training", spec), claim)


@pytest.fixture(scope="module")
def replicas(
    podman: Podman,
    image: str,
    run_id: str,
    manifests: Manifests,
    published: Published,
) -> Iterator[list[Replica]]:
    """Two pods of the rendered Deployment, from the image, each on its own port."""
    assert published.run.status == 0, published.run.stderr
    deployment = manifests.get("Deployment")
    started: list[Replica] = []
    try:
        for index in range(2):
            port = free_port()
            pod = describe(deployment, manifests, name=f"iris-predictor-{index}")
            spec = from_pod(pod, claims(manifests, published.root), {port: "http"})
            assert spec.image == image
            container = podman.start(f"{run_id}-predictor-{index}", spec)
            started.append(Replica(container, f"http://127.0.0.1:{port}", pod))
        for replica in started:
            wait_until_ready(replica)
        yield started
    finally:
        for replica in started:
            replica.container.remove()


def wait_until_ready(replica: Replica) -> None:
    """Polls the rendered readinessProbe's path until it answers 200."""
    readiness = replica.pod.container().probes["readiness"]
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{replica.url}{readiness.path}", timeout=5)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not replica.container.running():
            break
        time.sleep(0.25)
    raise AssertionError(
        f"{replica.container.name} never became ready at {replica.url}; "
        f"log:\n{replica.container.logs()}"
    )


def probe(replica: Replica) -> dict[str, object]:
    result = replica.container.exec("python", "-c", INSIDE)
    assert result.status == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_image_configuration(podman: Podman, image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000"
    assert config["Cmd"] == ["python", "-m", "predictor"]
    assert "Entrypoint" not in config or not config["Entrypoint"]
    assert "8080/tcp" in config["ExposedPorts"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "iris"
    assert labels["org.opencontainers.image.version"] == BUILD_ARGUMENTS["VERSION"]
    assert labels["org.opencontainers.image.revision"] == BUILD_ARGUMENTS["REVISION"]
    assert labels["org.opencontainers.image.source"] == BUILD_ARGUMENTS["SOURCE"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    names = {entry.partition("=")[0] for entry in config["Env"]}
    assert {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "HOME"} <= names
    assert not [name for name in names if "KEY" in name or "SECRET" in name]


def test_the_sbom_lists_every_installed_package_at_its_locked_version(
    podman: Podman, image: str, run_id: str
) -> None:
    done = podman.run(
        f"{run_id}-sbom", ContainerSpec(image=image, command=("cat", SBOM_PATH))
    )
    assert done.status == 0, done.stderr
    sbom = json.loads(done.stdout)
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("iris", BUILD_ARGUMENTS["VERSION"])
    listed: dict[str, str] = {
        canonicalize_name(component["name"]): component["version"]
        for component in sbom["components"]
    }
    listed.pop("iris", None)
    locked = pinned("runtime.txt", IMAGE_ENVIRONMENT)
    for name in ("kserve", "scikit-learn", "numpy"):
        assert listed[name] == locked[name], name
    # Everything locked is there, at its version, and nothing else: setuptools aside,
    # which the Dockerfile removes.
    del locked["setuptools"]
    assert listed == locked


def test_training_publishes_a_verified_version(published: Published) -> None:
    assert published.run.status == 0, published.run.stderr
    version = published.version()
    assert f"published version={version}" in published.run.stderr
    assert "published" in published.run.stdout.lower()
    files = sorted(
        path.relative_to(published.root).as_posix()
        for path in published.root.rglob("*")
        if path.is_file()
    )
    history = [name for name in files if name.startswith("history/")]
    assert files == sorted(
        [
            *history,
            "latest.json",
            f"versions/{version}/grid.npz",
            f"versions/{version}/metadata.json",
            f"versions/{version}/model.skops",
        ]
    )
    # One pointer change, the publish, is recorded.
    assert len(history) == 1
    assert history[0].endswith(".json")
    # Written by UID 1000, the only user the container has.
    assert {path.stat().st_uid for path in published.root.rglob("*")} == {UID}


def test_each_replica_predicts(replicas: list[Replica]) -> None:
    for replica in replicas:
        response = httpx.post(
            f"{replica.url}/v1/models/iris:predict",
            json={"instances": ROWS},
            timeout=30,
        )
        assert (response.status_code, response.json()) == (
            200,
            {"predictions": [1, 1]},
        ), replica.container.name


def test_each_replica_serves_on_uvloop(replicas: list[Replica]) -> None:
    # KServe's default loop, which the runtime lock installs (see predictor/server.py).
    for replica in replicas:
        assert "event_loop=uvloop.Loop" in replica.container.logs()


def test_each_replica_is_alive_and_exports_metrics(
    replicas: list[Replica], published: Published
) -> None:
    for replica in replicas:
        assert httpx.get(f"{replica.url}/", timeout=10).status_code == 200
        metrics = httpx.get(f"{replica.url}/metrics", timeout=10)
        assert metrics.status_code == 200
        lines = metrics.text.splitlines()
        assert 'iris_model_ready{model_name="iris"} 1.0' in lines
        # The version the training container published is the one served.
        assert [
            line
            for line in lines
            if line.startswith("iris_model_info{")
            and f'version="{published.version()}"' in line
        ], metrics.text


def test_runs_as_uid_1000_on_a_read_only_root(replicas: list[Replica]) -> None:
    for replica in replicas:
        answer = probe(replica)
        assert answer["uid"] == [str(UID)] * 4  # real, effective, saved, filesystem
        assert answer["gid"] == [str(UID)] * 4
        assert "ro" in answer["root_options"]  # type: ignore[operator]
        assert answer["writes"] == {
            "/": "EROFS",
            "/opt/venv": "EROFS",
            "/models": "EROFS",
            "/tmp": "written",  # noqa: S108 - the emptyDir in the container
        }


def test_no_compiler_and_no_model_in_the_image(replicas: list[Replica]) -> None:
    answer = probe(replicas[0])
    assert answer["tools"] == []
    assert answer["pip_in_venv"] is False
    assert answer["sbom_tool"] is False
    assert answer["model_files"] == []


def test_sigterm_stops_each_replica_cleanly(replicas: list[Replica]) -> None:
    for replica in replicas:
        assert replica.container.running(), replica.container.logs()
        grace = replica.pod.termination_grace_period_seconds
        status, seconds = replica.container.stop(grace_seconds=grace)
        log = replica.container.logs()
        assert status == 0, log
        assert seconds < grace, log  # stopped by SIGTERM, not killed at the deadline
        assert "draining readiness=false" in log


def run_tracked_job(
    podman: Podman,
    image: str,
    name: str,
    tracking_uri: str,
    root: Path,
    env: dict[str, str] | None = None,
) -> Exited:
    """The rendered training Job's pod with training.mlflow set, on the host's
    network so that it reaches a server on the host's 127.0.0.1; ``env`` is set
    over the rendered environment."""
    repository, _, tag = image.rpartition(":")
    manifests = render(
        {
            "image": {"repository": repository, "tag": tag},
            "training": {
                "mlflow": {
                    "trackingUri": tracking_uri,
                    "experiment": name,
                    "modelName": name,
                }
            },
        }
    )
    os.chown(root, UID, UID)
    job = describe(manifests.get("Job"), manifests)
    spec = replace(from_pod(job, claims(manifests, root)), network="host")
    assert spec.env["IRIS_MLFLOW_TRACKING_URI"] == tracking_uri
    return podman.run(name, replace(spec, env={**spec.env, **(env or {})}))


def test_the_job_records_its_run_and_the_champion_in_mlflow(
    podman: Podman, image: str, run_id: str, mlflow_server: str, tmp_path: Path
) -> None:
    name = f"{run_id}-mlflow"

    done = run_tracked_job(podman, image, name, mlflow_server, tmp_path)

    assert done.status == ExitCode.PUBLISHED, done.stderr
    version = Published(done, tmp_path).version()
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags[STORE_VERSION_TAG] == version
    folds = client.get_metric_history(run.info.run_id, CV_SCORES_METRIC)
    assert [fold.step for fold in folds] == [0, 1, 2, 3, 4]
    champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    assert (champion.run_id, champion.tags[STORE_VERSION_TAG]) == (
        run.info.run_id,
        version,
    )


def test_an_unreachable_tracking_server_warns_and_the_job_publishes(
    podman: Podman, image: str, run_id: str, tmp_path: Path
) -> None:
    nothing_listens = f"http://127.0.0.1:{free_port()}"

    done = run_tracked_job(
        podman, image, f"{run_id}-unreachable", nothing_listens, tmp_path
    )

    assert done.status == ExitCode.PUBLISHED, done.stderr
    assert Published(done, tmp_path).version()
    warnings = [
        line
        for line in done.stderr.splitlines()
        if {"level=WARNING", "logger=training.tracking"} <= set(line.split())
    ]
    assert len(warnings) == 1, done.stderr


def test_a_tracking_uri_no_client_can_use_exits_2(
    podman: Podman, image: str, run_id: str, tmp_path: Path
) -> None:
    # The chart's schema refuses this URI (tests/chart/test_wiring.py); the program
    # must refuse it too, as set by hand (e.g. through training.extraEnv).
    done = run_tracked_job(
        podman,
        image,
        f"{run_id}-bad-uri",
        "http://127.0.0.1:1",
        tmp_path,
        env={"IRIS_MLFLOW_TRACKING_URI": "http://127.0.0.1:port"},
    )

    assert done.status == ExitCode.USAGE, done.stderr
    assert "mlflow_tracking_uri" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_predictor_never_imports_mlflow(
    podman: Podman, image: str, run_id: str
) -> None:
    script = "import sys, predictor.__main__; print('mlflow' in sys.modules)"
    done = podman.run(
        f"{run_id}-imports",
        ContainerSpec(image=image, command=("python", "-c", script)),
    )

    assert (done.status, done.stdout.strip()) == (0, "False"), done.stderr
