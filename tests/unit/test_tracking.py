"""MLflow tracking against a real MLflow server (SQLite, local artifacts) on 127.0.0.1.

The server is tests/conftest.py's ``mlflow_server``, one for the session; the runs,
the registry and the alias are read back through mlflow-skinny's ``MlflowClient``,
the client training itself uses. The program runs in process
(``training.__main__.main``): these tests are about what is recorded, and an
interpreter's start-up per run costs seconds; tests/image runs it as a process.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port
from training.__main__ import main
from training.gate import ExitCode
from training.store import open_store
from training.tracking import CHAMPION_ALIAS, CV_SCORES_METRIC, STORE_VERSION_TAG

# The smallest training that still passes the default gate on Iris.
TINY = ("--n_estimators", "5", "--cv_folds", "2")


def train_tracked(uri: str, models: Path, name: str, *extra: str) -> int:
    return main(
        [
            "--model_uri",
            str(models),
            "--mlflow_tracking_uri",
            uri,
            "--mlflow_experiment",
            name,
            "--mlflow_model_name",
            name,
            *TINY,
            *extra,
        ]
    )


def runs(client: MlflowClient, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(
        client.search_runs([found.experiment_id], order_by=["attributes.start_time"])
    )


def champion_store_version(client: MlflowClient, name: str) -> str:
    version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    return str(version.tags[STORE_VERSION_TAG])


def current_version(models: Path) -> str:
    pointer = open_store(str(models)).read_pointer()
    assert pointer is not None
    return pointer.version


def test_a_publish_records_the_run_and_makes_it_champion(
    mlflow_server: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    assert train_tracked(mlflow_server, models, "publish") == ExitCode.PUBLISHED
    client = MlflowClient(mlflow_server)
    store = open_store(str(models))
    pointer = store.read_pointer()
    assert pointer is not None
    published = pointer.version
    metrics = store.load(pointer).metadata.metrics
    [run] = runs(client, "publish")
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "5"
    assert run.data.params["cv_folds"] == "2"
    assert run.data.metrics["accuracy"] == pytest.approx(metrics.accuracy)
    assert run.data.metrics["cv_accuracy_mean"] == pytest.approx(
        metrics.cv_accuracy_mean
    )
    assert run.data.metrics["gate_exit_code"] == ExitCode.PUBLISHED
    folds = client.get_metric_history(run.info.run_id, CV_SCORES_METRIC)
    assert [fold.step for fold in folds] == [0, 1]
    scores = [fold.value for fold in folds]
    assert all(0 <= score <= 1 for score in scores)
    assert statistics.fmean(scores) == pytest.approx(metrics.cv_accuracy_mean)
    assert statistics.pstdev(scores) == pytest.approx(metrics.cv_accuracy_std)
    assert run.data.tags["gate.verdict"] == "published"
    assert run.data.tags[STORE_VERSION_TAG] == published
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"confusion_matrix.json", "model"}
    model_files = {
        item.path for item in client.list_artifacts(run.info.run_id, "model")
    }
    assert model_files == {"model/model.skops", "model/model_card.json"}
    downloaded = Path(
        client.download_artifacts(
            run.info.run_id, "confusion_matrix.json", str(tmp_path)
        )
    )
    matrix = json.loads(downloaded.read_text())
    assert matrix["matrix"] == metrics.confusion_matrix
    assert champion_store_version(client, "publish") == published
    champion = client.get_model_version_by_alias("publish", CHAMPION_ALIAS)
    assert champion.run_id == run.info.run_id


def test_a_refused_model_logs_the_verdict_and_moves_nothing(
    mlflow_server: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    assert train_tracked(mlflow_server, models, "refused") == ExitCode.PUBLISHED
    published = current_version(models)

    refused = train_tracked(
        mlflow_server,
        models,
        "refused",
        "--algorithm",
        "decision_tree",
        "--max_depth",
        "1",
    )

    assert refused == ExitCode.BELOW_MIN_ACCURACY
    client = MlflowClient(mlflow_server)
    first, second = runs(client, "refused")
    assert second.data.tags["gate.verdict"] == "below_min_accuracy"
    assert second.data.tags["gate.published"] == "false"
    assert second.data.metrics["gate_exit_code"] == ExitCode.BELOW_MIN_ACCURACY
    assert STORE_VERSION_TAG not in second.data.tags
    registered = client.search_model_versions("name='refused'")
    assert [version.run_id for version in registered] == [first.info.run_id]
    assert champion_store_version(client, "refused") == published
    assert current_version(models) == published


def test_rollback_and_promote_move_the_alias(
    mlflow_server: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    assert train_tracked(mlflow_server, models, "rollback") == ExitCode.PUBLISHED
    first = current_version(models)
    forced = train_tracked(mlflow_server, models, "rollback", "--force", "true")
    assert forced == ExitCode.PUBLISHED
    second = current_version(models)
    client = MlflowClient(mlflow_server)
    assert champion_store_version(client, "rollback") == second
    where = ("--model_uri", str(models), "--mlflow_tracking_uri", mlflow_server)
    names = ("--mlflow_model_name", "rollback")

    assert main(["rollback", *where, *names]) == ExitCode.PUBLISHED
    assert champion_store_version(client, "rollback") == first
    assert main(["promote", second, *where, *names]) == ExitCode.PUBLISHED
    assert champion_store_version(client, "rollback") == second


def test_an_unreachable_server_warns_once_and_publishing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    nothing_listens = f"http://127.0.0.1:{free_port()}"

    with caplog.at_level(logging.WARNING, logger="training.tracking"):
        result = train_tracked(nothing_listens, models, "unreachable")

    assert result == ExitCode.PUBLISHED
    assert len(open_store(str(models)).list_versions()) == 1
    warnings = [
        record
        for record in caplog.records
        if record.name == "training.tracking" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "uri",
    ["ftp://127.0.0.1/mlflow", "127.0.0.1:5000", "http://127.0.0.1:port", "http://"],
)
def test_a_bad_tracking_uri_exits_2_and_trains_nothing(
    tmp_path: Path, uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"

    with pytest.raises(SystemExit) as exited:
        train_tracked(uri, models, "bad")

    assert exited.value.code == ExitCode.USAGE
    assert "mlflow_tracking_uri" in capsys.readouterr().err
    assert not models.exists()
