"""What the page says before a model is loaded and when the server goes away."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.api.conftest import PredictorProcess
from tests.ui.conftest import TryItPage
from training.store import open_store
from training.train import TrainedModel


def test_the_page_says_no_model_yet_then_serves_it_then_says_unreachable(
    open_page: Callable[[PredictorProcess], TryItPage],
    trained: TrainedModel,
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    server = PredictorProcess(
        tmp_path / "predictor.log",
        "--model_uri",
        str(root),
        "--reload_interval_seconds",
        "0.2",
    )
    try:
        tab = open_page(server)
        tab.wait_for_status("not-ready")
        status, body = server.request("GET", "/v1/models/iris/metadata")
        assert status == 503
        status_line = tab.page.locator("#status")
        assert "No model is loaded yet; trying again every 2 s." in (
            status_line.inner_text()
        )
        assert body["error"] in status_line.inner_text()
        assert tab.page.locator("#content").is_hidden()

        open_store(str(root)).publish(trained.estimator, trained.card, 5)

        tab.wait_for_status("ready")
        assert tab.page.locator("#content").is_visible()
        assert tab.prediction() in trained.card.class_names
    finally:
        assert server.stop() == 0

    tab.wait_for_status("unreachable")
    assert "cannot be reached" in tab.page.locator("#status").inner_text()
