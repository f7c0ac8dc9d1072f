"""Readiness tells the truth: only a verified model is ever served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api.conftest import JSON, PredictorProcess, wait_for_failures
from tests.api.models import BROKEN, publish_broken
from training.store import open_store
from training.train import TrainedModel

NOT_LOADED = {
    "error": "Model with name iris is not ready. No model has been loaded yet."
}
FAST_RELOAD = ("--reload_interval_seconds", "0.1")


def failure_lines(server: PredictorProcess) -> list[str]:
    return [line for line in server.log().splitlines() if "model load failed" in line]


def test_with_nothing_published_the_server_is_alive_but_not_ready(
    start_predictor: Any, tmp_path: Path
) -> None:
    server = start_predictor("--model_uri", str(tmp_path / "empty"))

    assert server.request("GET", "/") == (200, {"status": "alive"})
    assert server.request("GET", "/v1/models/iris") == (503, NOT_LOADED)
    assert server.request("GET", "/v2/models/iris/ready") == (503, NOT_LOADED)
    assert server.request("GET", "/v2/health/ready") == (
        503,
        {"error": "Server is not ready. No model has been loaded yet."},
    )
    assert server.predict([[6.8, 2.8, 4.8, 1.4]]) == (503, NOT_LOADED)
    assert server.request("GET", "/v1/models/iris/metadata") == (503, NOT_LOADED)


def test_no_broken_model_ever_becomes_ready_and_the_first_good_one_does(
    start_predictor: Any, tmp_path: Path, trained: TrainedModel
) -> None:
    root = tmp_path / "models"
    store = open_store(str(root))
    marker = tmp_path / "code-ran"
    server = start_predictor("--model_uri", str(root), *FAST_RELOAD)

    for failures, kind in enumerate(BROKEN, start=1):
        expected = publish_broken(kind, store, trained, marker)
        wait_for_failures(server, failures)

        assert server.request("GET", "/v1/models/iris") == (503, NOT_LOADED), kind
        line = failure_lines(server)[-1]
        assert "not ready reason=" in line, line
        assert expected in line, line
        assert str(root) in line, line

    assert not marker.exists(), "a model file ran code"
    assert "Traceback" not in server.log()

    good = store.publish(trained.estimator, trained.card, 5)
    server.wait_until("/v1/models/iris", 200)
    assert (
        server.request("GET", "/v1/models/iris/metadata")[1]["version"] == good.version
    )
    assert server.predict([[6.8, 2.8, 4.8, 1.4]])[0] == 200


def test_a_broken_model_at_start_up_is_named_in_one_log_line(
    start_predictor: Any, tmp_path: Path, trained: TrainedModel
) -> None:
    root = tmp_path / "models"
    expected = publish_broken(
        "random bytes", open_store(str(root)), trained, tmp_path / "m"
    )

    server = start_predictor("--model_uri", str(root))
    wait_for_failures(server, 1)

    assert server.request("GET", "/v1/models/iris") == (503, NOT_LOADED)
    (line,) = failure_lines(server)
    assert f"reason={root}/versions/{expected}" in line


def test_a_failed_reload_keeps_the_old_model_serving(
    start_predictor: Any, tmp_path: Path, trained: TrainedModel
) -> None:
    root = tmp_path / "models"
    store = open_store(str(root))
    serving = store.publish(trained.estimator, trained.card, 5)
    server = start_predictor("--model_uri", str(root), *FAST_RELOAD)
    server.wait_until("/v1/models/iris", 200)

    kinds = ["truncated", "wrong answers, no grid", "zip bomb", "too many zip members"]
    for failures, kind in enumerate(kinds, start=1):
        if kind == "zip bomb":
            # scikit-learn and skops are imported by now: nothing after adds a module.
            peak_before = server.peak_rss_bytes()
        expected = publish_broken(kind, store, trained, tmp_path / "m")
        wait_for_failures(server, failures)

        assert server.request("GET", "/v1/models/iris") == (
            200,
            {"name": "iris", "ready": True},
        )
        assert (
            server.request("GET", "/v1/models/iris/metadata")[1]["version"]
            == serving.version
        )
        assert server.request(
            "POST",
            "/v1/models/iris:predict",
            {"instances": [[5.1, 3.5, 1.4, 0.2]]},
            JSON,
        ) == (200, {"predictions": [0]})
        line = failure_lines(server)[-1]
        assert f"still serving version={serving.version}" in line
        assert expected in line
    # The zip bomb unpacks to 1 GiB: none of it was ever held.
    assert server.peak_rss_bytes() - peak_before < 64 * 1024 * 1024
    assert (
        server.metric(
            "iris_model_info",
            model_name="iris",
            version=serving.version,
            algorithm="random_forest",
            evaluator="grid",
        )
        == 1
    )
