"""A running predictor follows `python -m training rollback` as it follows a publish."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.api.conftest import PredictorProcess
from training.__main__ import main
from training.gate import ExitCode
from training.store import open_store
from training.train import TrainedModel


def wait_for_version(server: PredictorProcess, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    served = None
    while time.monotonic() < deadline:
        status, body = server.request("GET", "/v1/models/iris/metadata")
        served = body.get("version") if status == 200 else None
        if served == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"still serving {served}, not {version}")


def test_a_running_predictor_follows_a_rollback_and_a_promote(
    start_predictor: Any, tmp_path: Path, default_model: TrainedModel
) -> None:
    models = tmp_path / "models"
    store = open_store(str(models))
    first = store.publish(default_model.estimator, default_model.card, 5).version
    server = start_predictor(
        "--model_uri", str(models), "--reload_interval_seconds", "0.1"
    )
    server.wait_until("/v1/models/iris", 200)
    second = store.publish(default_model.estimator, default_model.card, 5).version
    wait_for_version(server, second, timeout=10)

    # In process: the predictor is the process under test here.
    rolled = main(["rollback", "--model_uri", str(models), "--reason", "test"])
    assert rolled == ExitCode.PUBLISHED
    wait_for_version(server, first, timeout=10)

    assert main(["promote", second, "--model_uri", str(models)]) == ExitCode.PUBLISHED
    wait_for_version(server, second, timeout=10)
