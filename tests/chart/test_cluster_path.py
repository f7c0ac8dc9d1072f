"""The cluster path cannot run here, so every fact it depends on is checked here: the
workflow, the Makefile's kind targets, skaffold.yaml and k8s/ must agree with the
rendered chart and with the code they run."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kserve import V1beta1InferenceService, V1beta1PredictorSpec
from kubernetes.client import (
    V1Container,
    V1ObjectMeta,
    V1PodSecurityContext,
    V1Volume,
)

from predictor.guard import route_of
from predictor.settings import PredictorSettings, parse_settings
from tests.chart.helm_binary import HELM_VERSION
from tests.chart.pods import pod_spec_of, selects, workloads
from tests.chart.render import (
    CHART,
    HELM,
    RELEASE,
    REPO,
    Manifests,
    default_values,
    helm,
    render,
)
from tests.e2e import conftest as e2e
from tests.e2e import test_cluster as e2e_cluster
from training.store.bucket import S3Settings

KIND_VALUES = CHART / "ci" / "kind-values.yaml"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+)*$")


@cache
def make_variable(name: str) -> str:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", f"print-{name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def make_commands(target: str, **variables: str) -> list[str]:
    """The shell commands `make target` would run, one per line."""
    assignments = [f"{key}={value}" for key, value in variables.items()]
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *assignments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.replace("\\\n", " ").splitlines()


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def release_render(*values_files: Path) -> Manifests:
    """The chart as make kind-up installs it, under the Makefile's release name."""
    assert make_variable("RELEASE") == RELEASE
    values: dict[str, Any] = {}
    for path in values_files:
        values.update(load(path))
    return render(values)


def workflow_steps() -> list[dict[str, Any]]:
    return [
        step
        for path in WORKFLOWS
        for job in load(path)["jobs"].values()
        for step in job["steps"]
    ]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_workflows_pass_actionlint_and_the_github_schema(path: Path) -> None:
    for command in (
        [str(BIN / "actionlint"), str(path)],
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
    ):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit_and_names_its_version() -> None:
    lines = [
        line.split("uses:", 1)[1].strip()
        for path in WORKFLOWS
        for line in path.read_text().splitlines()
        if "uses:" in line
    ]
    assert lines
    for used in lines:
        assert PINNED.match(used), used


def test_the_workflow_installs_the_helm_the_tests_render_with() -> None:
    helms = [s for s in workflow_steps() if "setup-helm" in s.get("uses", "")]
    assert helms
    assert {helm["with"]["version"] for helm in helms} == {HELM_VERSION}


def test_the_workflow_runs_the_make_targets_users_run() -> None:
    runs = [step.get("run", "") for step in workflow_steps()]
    assert "make kind-up" in runs
    assert "make e2e" in runs
    assert "make kind-debug" in runs
    assert any("IRIS_REQUIRE_NETNS=1 make test" in run for run in runs)
    (kind_job,) = [
        job
        for path in WORKFLOWS
        for job in load(path)["jobs"].values()
        if "matrix" in job.get("strategy", {})
    ]
    assert sorted(kind_job["strategy"]["matrix"]["storage"]) == ["minio", "pvc"]
    assert kind_job["env"]["STORAGE"] == "${{ matrix.storage }}"
    assert kind_job["env"]["IRIS_REQUIRE_CLUSTER"] == "1"


def test_the_kind_cluster_has_two_workers_and_maps_the_node_port() -> None:
    cluster = load(REPO / "k8s" / "kind-config.yaml")
    roles = [node["role"] for node in cluster["nodes"]]
    assert sorted(roles) == ["control-plane", "worker", "worker"]
    assert cluster["name"] == make_variable("CLUSTER")
    (control_plane,) = [n for n in cluster["nodes"] if n["role"] == "control-plane"]
    (mapping,) = control_plane["extraPortMappings"]
    node_port = load(KIND_VALUES)["service"]["nodePort"]
    assert mapping["containerPort"] == node_port == e2e.NODE_PORT == 30080
    assert mapping["hostPort"] == e2e.NODE_PORT
    service = release_render(KIND_VALUES).get("Service", make_variable("RELEASE"))
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == mapping["containerPort"]


def test_only_the_kind_values_open_a_node_port() -> None:
    service = release_render().get("Service", make_variable("RELEASE"))
    assert service["spec"]["type"] == "ClusterIP"
    assert "nodePort" not in service["spec"]["ports"][0]
    for storage in ("pvc", "minio"):
        (install,) = [
            c
            for c in make_commands("kind-install", STORAGE=storage)
            if c.startswith("helm upgrade --install")
        ]
        arguments = shlex.split(install)
        assert arguments[arguments.index("--values") + 1] == str(
            KIND_VALUES.relative_to(REPO)
        )
    skaffold = load(REPO / "skaffold.yaml")
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert release["valuesFiles"] == [str(KIND_VALUES.relative_to(REPO))]


def test_make_names_the_release_the_service_readme_and_e2e_tests_use() -> None:
    release, namespace = make_variable("RELEASE"), make_variable("NAMESPACE")
    assert (release, namespace) == (e2e.RELEASE, e2e.NAMESPACE)
    manifests = release_render(KIND_VALUES)
    # README: helm install iris ./charts/iris; kubectl port-forward svc/iris 8080:80
    service = manifests.get("Service", "iris")
    assert service["spec"]["ports"][0]["port"] == 80
    assert manifests.get("Deployment")["metadata"]["name"] == release
    assert manifests.get("HorizontalPodAutoscaler")["metadata"]["name"] == release
    readme = (REPO / "README.md").read_text()
    assert "kubectl port-forward svc/iris 8080:80" in readme


def test_make_builds_and_installs_the_image_the_chart_runs() -> None:
    repository, tag = make_variable("IMAGE_REPOSITORY"), "e2e-tag"
    # kind runs the image it loaded, not the chart's default (the published one).
    assert repository != default_values()["image"]["repository"]
    commands = make_commands("kind-up", IMAGE_TAG=tag, STORAGE="pvc")
    image = f"{repository}:{tag}"
    assert f"docker build -t {image} ." in commands
    assert any(f"kind load docker-image {image} --name iris" in c for c in commands)
    (install,) = [c for c in commands if c.startswith("helm upgrade --install iris")]
    arguments = shlex.split(install)
    assert arguments[3:5] == [make_variable("RELEASE"), "charts/iris"]
    assert f"image.repository={repository}" in arguments
    assert arguments[arguments.index(f"image.tag={tag}") - 1] == "--set-string"
    assert "--wait" in arguments
    # Helm 4's --wait (kstatus) counts a running Job as current: only
    # --wait-for-jobs waits for the training Job to complete.
    assert "--wait-for-jobs" in arguments
    rendered = render({"image": {"repository": repository, "tag": tag}})
    images = {
        container.image
        for workload in workloads(rendered)
        for container in pod_spec_of(workload)[1].containers
        if "minio" not in str(container.image)
    }
    assert images == {image}


def test_the_minio_storage_mode_installs_the_bundled_minio() -> None:
    commands = make_commands("kind-install", STORAGE="minio")
    (install,) = [c for c in commands if c.startswith("helm upgrade --install")]
    arguments = shlex.split(install)
    values_files = [
        REPO / arguments[i + 1] for i, a in enumerate(arguments) if a == "--values"
    ]
    manifests = release_render(*values_files)
    assert manifests.get("Service", f"{make_variable('RELEASE')}-minio")
    environment = _chart_environment(manifests)
    assert environment["IRIS_MODEL_URI"].startswith("s3://")
    (pvc_install,) = [
        c
        for c in make_commands("kind-install", STORAGE="pvc")
        if c.startswith("helm upgrade --install")
    ]
    assert "minio-values.yaml" not in pvc_install


def test_the_debug_step_finds_every_component_by_the_charts_labels() -> None:
    manifests = release_render(CHART / "ci" / "minio-values.yaml")
    pods = [
        (
            workload["metadata"]["labels"].get("app.kubernetes.io/component"),
            pod_spec_of(workload)[0],
        )
        for workload in workloads(manifests)
    ]
    commands = make_commands("kind-debug")
    (loop,) = [c for c in commands if " logs " in c]
    components = loop.split("for component in ")[1].split(";")[0].split()
    assert set(components) == {"training", "predictor", "minio"}
    selector = loop.split(" -l ")[1].split(";")[0].strip()
    for component in components:
        wanted = dict(
            pair.split("=")
            for pair in selector.replace("$component", component).split(",")
        )
        found = {owner for owner, labels in pods if selects(wanted, labels)}
        assert found == {component}, (component, found)
    for command in commands:
        assert f"--namespace {make_variable('NAMESPACE')}" in command


def test_skaffold_builds_the_image_and_installs_the_chart_with_it() -> None:
    skaffold = load(REPO / "skaffold.yaml")
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    (artifact,) = skaffold["build"]["artifacts"]
    assert artifact["image"] == make_variable("IMAGE_REPOSITORY")
    assert (REPO / artifact["docker"]["dockerfile"]).is_file()
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert release["name"] == make_variable("RELEASE")
    assert release["namespace"] == make_variable("NAMESPACE")
    assert REPO / release["chartPath"] == CHART
    image = artifact["image"]
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{image}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{image}}}}}",
    }
    (kind,) = [p for p in skaffold["profiles"] if p["name"] == "kind"]
    context = f"kind-{make_variable('CLUSTER')}"
    assert kind["activation"] == [{"kubeContext": context}]
    assert kind["deploy"]["kubeContext"] == context
    assert kind["build"]["local"]["push"] is False


INFERENCE_SERVICES = ["inferenceservice.yaml", "inferenceservice-s3.yaml"]


@pytest.mark.parametrize("name", INFERENCE_SERVICES)
def test_the_inference_service_is_a_valid_kserve_standard_deployment(name: str) -> None:
    service = load(REPO / "k8s" / name)
    assert set(service) <= set(V1beta1InferenceService.attribute_map.values())
    assert (service["apiVersion"], service["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    V1ObjectMeta.model_validate(service["metadata"])
    annotations = service["metadata"]["annotations"]
    # KServe 0.15 accepts only RawDeployment; 0.16+ normalizes it to Standard
    # (pkg/constants ParseDeploymentMode, LegacyRawDeployment).
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = service["spec"]["predictor"]
    assert set(service["spec"]) == {"predictor"}
    assert set(predictor) <= set(V1beta1PredictorSpec.attribute_map.values())
    assert predictor["scaleMetric"] in {"cpu", "memory"}
    V1PodSecurityContext.model_validate(predictor["securityContext"])
    for volume in predictor["volumes"]:
        V1Volume.model_validate(volume)
    (container,) = predictor["containers"]
    V1Container.model_validate(container)
    assert container["name"] == "kserve-container"


@pytest.mark.parametrize("name", INFERENCE_SERVICES)
def test_the_inference_service_runs_the_charts_predictor(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (container,) = load(REPO / "k8s" / name)["spec"]["predictor"]["containers"]
    values = default_values()
    chart_image = f"{values['image']['repository']}:{_app_version()}"
    assert container["image"] == chart_image
    assert container["command"] == ["python", "-m", "predictor"]
    environment = {
        each["name"]: each.get("value", "from-secret") for each in container["env"]
    }
    for key in [k for k in os.environ if k.startswith("IRIS_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings, arguments = parse_settings(container["args"])
    assert arguments.model_name == "iris"
    assert arguments.http_port == container["ports"][0]["containerPort"]
    assert isinstance(settings, PredictorSettings)
    known = {f"IRIS_{field.upper()}" for field in PredictorSettings.model_fields}
    known |= {f"IRIS_S3_{field.upper()}" for field in S3Settings.model_fields}
    assert set(environment) <= known
    assert (
        route_of(container["readinessProbe"]["httpGet"]["path"]) == "/v1/models/{model}"
    )
    assert container["livenessProbe"]["httpGet"]["path"] == "/"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == arguments.http_port


def test_the_pvc_inference_service_reads_the_claim_the_job_writes() -> None:
    predictor = load(REPO / "k8s" / "inferenceservice.yaml")["spec"]["predictor"]
    manifests = release_render()
    (claim,) = manifests.of_kind("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in predictor["volumes"]}
    (container,) = predictor["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    environment = {e["name"]: e["value"] for e in container["env"]}
    mount = mounts[environment["IRIS_MODEL_URI"]]
    assert (
        volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        == (claim["metadata"]["name"])
    )
    assert (
        _chart_environment(manifests)["IRIS_MODEL_URI"] == environment["IRIS_MODEL_URI"]
    )
    # A ReadWriteOnce claim attaches to one node: more than one replica could land
    # where it never starts (test_scheduling models the chart's own predictors).
    if claim["spec"]["accessModes"] == ["ReadWriteOnce"]:
        assert predictor["maxReplicas"] == predictor["minReplicas"] == 1


def test_the_s3_inference_service_reads_the_bucket_the_job_writes() -> None:
    (container,) = load(REPO / "k8s" / "inferenceservice-s3.yaml")["spec"]["predictor"][
        "containers"
    ]
    manifests = release_render(CHART / "ci" / "minio-values.yaml")
    chart = _chart_environment(manifests)
    environment = {e["name"]: e for e in container["env"]}
    assert environment["IRIS_MODEL_URI"]["value"] == chart["IRIS_MODEL_URI"]
    endpoint = environment["IRIS_S3_ENDPOINT"]["value"]
    host, port = endpoint.removeprefix("http://").split(":")
    minio = manifests.get("Service", host)
    assert [p["port"] for p in minio["spec"]["ports"]] == [int(port)]
    deployment = manifests.get("Deployment", RELEASE)
    (predictor,) = deployment["spec"]["template"]["spec"]["containers"]
    chart_env = {e["name"]: e for e in predictor["env"]}
    for key in ("IRIS_S3_ACCESS_KEY_ID", "IRIS_S3_SECRET_ACCESS_KEY"):
        assert environment[key]["valueFrom"] == chart_env[key]["valueFrom"]
        # The Secret the chart's keys Job makes in the cluster, with both keys.
        reference = environment[key]["valueFrom"]["secretKeyRef"]
        (keys_job,) = [
            job
            for job in manifests.of_kind("Job")
            if job["metadata"]["name"].startswith(f"{RELEASE}-minio-keys-")
        ]
        (keys,) = keys_job["spec"]["template"]["spec"]["containers"]
        assert f"--secret={reference['name']}" in keys["args"]
        assert any(a.endswith(f"-key={reference['key']}") for a in keys["args"])


def _app_version() -> str:
    version: str = load(CHART / "Chart.yaml")["appVersion"]
    return version


def _chart_environment(manifests: Manifests) -> dict[str, str]:
    """The predictor's environment as the chart renders it (secrets left out)."""
    deployment = manifests.get("Deployment", RELEASE)
    (predictor,) = deployment["spec"]["template"]["spec"]["containers"]
    return {each["name"]: each.get("value", "") for each in predictor["env"]}


@pytest.mark.parametrize("storage", ["pvc", "minio"])
def test_the_kind_install_command_renders_an_all_digit_image_tag(storage: str) -> None:
    # About 3% of short commit hashes are all digits; --set would make one a number.
    commands = make_commands("kind-install", IMAGE_TAG="1234567", STORAGE=storage)
    (install,) = [c for c in commands if c.startswith("helm upgrade --install")]
    arguments = shlex.split(install)[3:]
    wait_flags = {"--wait", "--wait-for-jobs", "--timeout", "10m"}
    options = [a for a in arguments if a not in wait_flags]
    text = helm("template", *options, "--kube-version", "1.29.0")
    images = {
        container["image"]
        for each in yaml.safe_load_all(text)
        if each and each["kind"] in ("Deployment", "Job")
        for container in each["spec"]
        .get("template", {})
        .get("spec", {})
        .get("containers", [])
        if "minio" not in container["image"]
    }
    assert images == {f"{make_variable('IMAGE_REPOSITORY')}:1234567"}


def _seconds(node: ast.expr) -> float:
    value = ast.literal_eval(node)
    if isinstance(value, str):
        return {"m": 60, "s": 1}[value[-1]] * float(value[:-1])
    return float(value)


def _literal_arguments(call: ast.Call) -> list[ast.Constant]:
    """A call's literal arguments, through lists, tuples and * unpacking."""
    found: list[ast.Constant] = []

    def add(node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            found.append(node)
        elif isinstance(node, ast.Starred):
            add(node.value)
        elif isinstance(node, ast.List | ast.Tuple):
            for element in node.elts:
                add(element)

    for argument in call.args:
        add(argument)
    return found


def test_the_e2e_timeout_outlasts_every_tests_own_waits() -> None:
    source = (REPO / "tests" / "e2e" / "test_cluster.py").read_text()
    tree = ast.parse(source)
    (timeout,) = re.findall(r"pytest\.mark\.timeout\((\d+)\)", source)
    helpers = {
        node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)
    }

    def waits(function: ast.FunctionDef) -> float:
        """Seconds its eventually() and --timeout calls may wait, helpers' included."""
        total = 0.0
        for call in ast.walk(function):
            if not isinstance(call, ast.Call):
                continue
            called = getattr(call.func, "id", None)
            if called == "eventually":
                total += _seconds(call.args[1])
            elif called in helpers and called != function.name:
                total += waits(helpers[called])
            arguments = _literal_arguments(call)
            texts = [a.value for a in arguments]
            if "--timeout" in texts:
                total += _seconds(arguments[texts.index("--timeout") + 1])
        return total

    assert waits(helpers["test_a_helm_value_rolls_the_served_model_back"]) >= 2 * 300
    for name, function in helpers.items():
        if name.startswith("test_"):
            assert waits(function) < int(timeout), (name, waits(function), timeout)


@pytest.mark.parametrize(
    ("storage", "name"),
    [("pvc", INFERENCE_SERVICES[0]), ("minio", INFERENCE_SERVICES[1])],
)
def test_make_kind_inferenceservice_applies_the_image_kind_up_loaded(
    storage: str, name: str
) -> None:
    # An all-digit tag, as in the chart's install command: it must stay a string.
    commands = make_commands(
        "kind-inferenceservice", IMAGE_TAG="1234567", STORAGE=storage
    )
    (applied,) = [c for c in commands if "kubectl apply" in c]
    substitution, apply = applied.split(" | ")
    assert shlex.split(apply)[:2] == ["kubectl", "apply"]
    assert shlex.split(apply)[-2:] == ["-f", "-"]
    done = subprocess.run(
        shlex.split(substitution), cwd=REPO, capture_output=True, text=True, check=True
    )
    applied_service = yaml.safe_load(done.stdout)
    (container,) = applied_service["spec"]["predictor"]["containers"]
    (loaded,) = [
        c
        for c in make_commands("kind-image", IMAGE_TAG="1234567")
        if c.startswith("kind load")
    ]
    assert container["image"] == shlex.split(loaded)[3] == "iris:1234567"
    # Nothing else changes.
    original = load(REPO / "k8s" / name)
    original["spec"]["predictor"]["containers"][0]["image"] = container["image"]
    assert applied_service == original


def kind_render(storage: str, extra: dict[str, Any] | None = None) -> Manifests:
    """The chart as make kind-install STORAGE=storage installs it, plus extra."""
    (install,) = [
        c
        for c in make_commands("kind-install", STORAGE=storage)
        if c.startswith("helm upgrade --install")
    ]
    arguments = shlex.split(install)
    values: dict[str, Any] = {}
    for index, argument in enumerate(arguments):
        if argument == "--values":
            values.update(load(REPO / arguments[index + 1]))
    for key, value in (extra or {}).items():
        values[key] = {**values.get(key, {}), **value}
    return render(values)


@pytest.mark.parametrize("storage", ["pvc", "minio"])
def test_an_uninstall_keeps_the_claim_the_models_live_on(storage: str) -> None:
    manifests = kind_render(storage)
    claims = manifests.of_kind("PersistentVolumeClaim")
    # The e2e reinstall test finds them by the release's instance label.
    assert claims
    for claim in claims:
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert claim["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    if storage == "minio":
        # MinIO's root keys too: a new pair would lock the reinstall out of the data.
        # The keys Job makes their Secret outside the release, so no uninstall
        # deletes it, and the reinstall's Job leaves it alone (test_minio_keys).
        assert manifests.of_kind("Secret") == []
        assert any(
            job["metadata"]["name"].startswith(f"{RELEASE}-minio-keys-")
            for job in manifests.of_kind("Job")
        )


@pytest.mark.parametrize("storage", ["pvc", "minio"])
def test_helm_rollback_of_a_log_level_upgrade_keeps_the_training_job(
    storage: str,
) -> None:
    installed = kind_render(storage)
    upgraded = kind_render(storage, {"predictor": {"settings": {"logLevel": "DEBUG"}}})
    # What the e2e helm rollback test rolls back to, and that no revision retrains.
    assert _chart_environment(installed)["IRIS_LOG_LEVEL"] == "INFO"
    assert _chart_environment(upgraded)["IRIS_LOG_LEVEL"] == "DEBUG"
    assert (
        installed.training_job()["metadata"]["name"]
        == (upgraded.training_job()["metadata"]["name"])
    )


def test_the_drained_mode_spreads_predictors_and_lets_one_go() -> None:
    manifests = kind_render("minio")
    deployment = manifests.get("Deployment", RELEASE)
    spec = deployment["spec"]["template"]["spec"]
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    # A drain must not wait on the spread: the evicted replica goes where it can.
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    budget = manifests.get("PodDisruptionBudget")
    hpa = manifests.get("HorizontalPodAutoscaler")
    assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    # MinIO's volume is node-local on kind: the drain test leaves its node alone.
    assert manifests.find("Deployment", f"{RELEASE}-minio") is not None


def test_helm_reads_the_reinstall_values_from_stdin() -> None:
    # tests/e2e reinstalls with `--values -` and the installed values as JSON on
    # stdin; Helm reads "-" as stdin (helm pkg/cli/values/options.go, readFile).
    source = (REPO / "tests" / "e2e" / "test_cluster.py").read_text()
    assert '*("--values", "-"),' in source
    values = {"service": {"type": "NodePort", "nodePort": 30123}}
    done = subprocess.run(
        [str(HELM), "template", RELEASE, str(CHART), "--values", "-"],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
    )
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    (service,) = [
        d
        for d in rendered
        if d["kind"] == "Service" and d["metadata"]["name"] == RELEASE
    ]
    assert service["spec"]["type"] == "NodePort"
    assert [port.get("nodePort") for port in service["spec"]["ports"]] == [30123]


def test_the_kind_prometheus_scrapes_the_release_and_the_workflow_runs_it() -> None:
    commands = make_commands("kind-prometheus")
    bundle = (
        "https://github.com/prometheus-operator/prometheus-operator/releases/"
        f"download/{make_variable('PROMETHEUS_OPERATOR')}/bundle.yaml"
    )
    assert f"kubectl apply --server-side -f {bundle}" in commands
    assert "kubectl apply --server-side -f k8s/prometheus.yaml" in commands
    documents = list(yaml.safe_load_all((REPO / "k8s" / "prometheus.yaml").read_text()))
    (prometheus,) = [d for d in documents if d["kind"] == "Prometheus"]
    assert prometheus["metadata"]["namespace"] == e2e_cluster.PROMETHEUS_NAMESPACE
    assert e2e_cluster.PROMETHEUS_SERVICE == "svc/prometheus-operated"
    # {} selects every object; the operator reads a missing selector as none.
    for selector in (
        "serviceMonitorSelector",
        "serviceMonitorNamespaceSelector",
        "ruleSelector",
        "ruleNamespaceSelector",
    ):
        assert prometheus["spec"][selector] == {}
    (account,) = [d for d in documents if d["kind"] == "ServiceAccount"]
    assert prometheus["spec"]["serviceAccountName"] == account["metadata"]["name"]
    (role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    (binding,) = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    readable = {
        resource
        for rule in role["rules"]
        if {"get", "list", "watch"} <= set(rule.get("verbs", []))
        for resource in rule.get("resources", [])
    }
    assert {"services", "endpoints", "pods", "endpointslices"} <= readable
    # The kind values switch both objects on (kind-addons installs their CRDs); they
    # render in the release's namespace, which the Prometheus selects.
    monitored = render(load(KIND_VALUES))
    assert monitored.get("ServiceMonitor", RELEASE)
    assert monitored.get("PrometheusRule", RELEASE)
    runs = [step.get("run", "") for step in workflow_steps()]
    assert runs.index("make kind-prometheus") < runs.index("make e2e")
