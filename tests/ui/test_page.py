"""The try-it page in a real browser against a real predictor: one of each, shared."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.api.conftest import PredictorProcess
from tests.ui.conftest import SETTLED, WAIT_MS, TryItPage
from training.store import ModelStore, open_store
from training.train import TrainedModel

OpenPage = Callable[..., TryItPage]
PRESETS = {
    "setosa": [5.1, 3.5, 1.4, 0.2],
    "versicolor": [6.5, 2.8, 4.6, 1.5],
    "virginica": [7.6, 3.0, 6.6, 2.2],
}
PREDICT = "/v1/models/iris:predict"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@dataclass(frozen=True)
class Served:
    server: PredictorProcess
    store: ModelStore
    trained: TrainedModel

    def metadata(self) -> dict[str, Any]:
        status, body = self.server.request("GET", "/v1/models/iris/metadata")
        assert status == 200, body
        return dict(body)

    def refusal(self, row: list[Any]) -> str:
        """The server's own message for a one-row request it refuses."""
        status, body = self.server.predict([row])
        assert status == 400, body
        return str(body["error"])

    def publish(self, trained: TrainedModel, **card: Any) -> str:
        """Publish a version and wait until the predictor serves it."""
        version = self.store.publish(
            trained.estimator, trained.card.model_copy(update=card), 5
        ).version
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            if self.metadata()["version"] == version:
                return version
            time.sleep(0.05)
        raise AssertionError(f"{version} never served; log:\n{self.server.log()}")


@pytest.fixture(scope="module")
def served(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ui-models")
    store = open_store(str(root))
    store.publish(trained.estimator, trained.card, 5)
    server = PredictorProcess(
        tmp_path_factory.mktemp("ui-logs") / "predictor.log",
        "--model_uri",
        str(root),
        "--reload_interval_seconds",
        "0.2",
    )
    server.wait_until("/v1/models/iris", 200)
    yield Served(server, store, trained)
    server.stop()


def shown_inputs(tab: TryItPage) -> list[float]:
    values = tab.page.eval_on_selector_all(
        "#features input[type=number]", "inputs => inputs.map(input => input.value)"
    )
    return [float(value) for value in values]


def table_cells(tab: TryItPage, selector: str) -> list[list[str]]:
    """A table's text, cell by cell; a cell spanning columns holds the last one's."""
    cells: list[list[str]] = tab.page.eval_on_selector_all(
        f"{selector} tr",
        """rows => rows.map(row => Array.from(row.cells).flatMap(cell => [
            ...Array(cell.colSpan - 1).fill(""), cell.textContent]))""",
    )
    return cells


def test_the_page_loads_with_no_console_error_and_no_request_off_its_origin(
    served: Served, open_page: OpenPage, tmp_path: Path
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")
    tab.prediction()
    for species in PRESETS:
        tab.page.get_by_role("button", name=species).click()
        tab.wait_for_label(species)

    tab.page.screenshot(path=tmp_path / "try-it.png", full_page=True)
    assert tab.console_errors == []
    paths = {request.removeprefix(tab.origin) for request in tab.requests}
    assert {
        "/ui/",
        "/ui/app.js",
        "/ui/style.css",
        "/v1/models",
        "/v1/models/iris/metadata",
        PREDICT,
    } <= paths
    assert tab.foreign_requests() == []


def test_axe_finds_no_accessibility_violation(
    served: Served, open_page: OpenPage
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")
    tab.prediction()
    tab.page.get_by_label("CSV rows").fill("5.1,3.5,1.4,0.2\n5.1,3.5,1.4,200\n")
    tab.page.get_by_role("button", name="Predict the rows").click()
    tab.page.locator("#batch-table tr.refused").wait_for(timeout=WAIT_MS)

    # axe-core's WCAG 2.1 A and AA rules: labels, names, roles, contrast.
    results = Axe().run(
        tab.page,
        options={"runOnly": {"type": "tag", "values": WCAG_TAGS}},
    )
    violations = {
        violation["id"]: [node["target"] for node in violation["nodes"]]
        for violation in results.response["violations"]
    }
    assert violations == {}
    assert results.response["passes"], "axe checked nothing"


def test_the_three_presets_give_the_three_species(
    served: Served, open_page: OpenPage
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")

    for species, row in PRESETS.items():
        tab.page.get_by_role("button", name=species).click()
        tab.wait_for_label(species)
        assert shown_inputs(tab) == row
        bars = tab.page.locator("#class-bars li")
        assert bars.count() == 3
        assert bars.locator(".bar-name").all_inner_texts() == list(PRESETS)
        assert (
            tab.page.locator("#class-bars li.predicted")
            .inner_text()
            .startswith(species)
        )


def test_moving_a_slider_with_the_keyboard_changes_the_prediction(
    served: Served, open_page: OpenPage
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")
    tab.page.get_by_role("button", name="versicolor").click()
    tab.wait_for_label("versicolor")

    slider = tab.page.get_by_role("slider", name="petal length")
    slider.focus()
    slider.press("End")

    expect(tab.page.locator("#predicted-label")).not_to_have_text(
        "versicolor", timeout=WAIT_MS
    )
    row = shown_inputs(tab)
    assert row == [6.5, 2.8, float(slider.input_value()), 1.5]
    accepted = served.metadata()["features"][2]
    assert row[2] <= accepted["max"]
    assert row[2] > accepted["max"] - 0.1
    status, body = served.server.predict([row])
    assert status == 200
    assert (
        tab.prediction()
        == ["setosa", "versicolor", "virginica"][body["predictions"][0]]
    )


def test_an_out_of_range_value_shows_the_servers_message(
    served: Served, open_page: OpenPage
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")
    tab.prediction()

    tab.page.get_by_role("spinbutton", name="sepal length").fill("150")

    error = tab.page.locator("#prediction-error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    row = shown_inputs(tab)
    assert row[0] == 150
    assert error.inner_text() == served.refusal(row)
    assert "150" in error.inner_text()
    assert tab.page.locator("#class-bars li").count() == 0

    tab.page.get_by_role("spinbutton", name="sepal length").fill("5.1")
    error.wait_for(state="hidden", timeout=WAIT_MS)
    assert tab.prediction() != ""


def test_a_csv_upload_gives_the_table_and_the_download_matches_it(
    served: Served, open_page: OpenPage, tmp_path: Path
) -> None:
    upload = tmp_path / "flowers.csv"
    # Columns in another order than the model's, and one it does not know.
    upload.write_text(
        "petal_length,sepal_length,sepal_width,petal_width,species\n"
        "1.4,5.1,3.5,0.2,setosa\n"
        "4.6,6.5,2.8,1.5,versicolor\n"
        "6.6,7.6,3.0,2.2,virginica\n"
        "1.4,150,3.5,0.2,too long\n"
        "1.4,5.1,abc,0.2,a typo\n"
    )
    tab = open_page(served.server)
    tab.wait_for_status("ready")

    tab.page.get_by_label("or upload a CSV file").set_input_files(upload)

    tab.page.locator("#batch-table tbody tr").nth(4).wait_for(timeout=WAIT_MS)
    table = table_cells(tab, "#batch-table")
    header, rows = table[0], table[1:]
    assert header == [
        "line",
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "class",
        "confidence",
        "p(setosa)",
        "p(versicolor)",
        "p(virginica)",
        "error",
    ]
    assert [row[:5] for row in rows] == [
        ["2", "5.1", "3.5", "1.4", "0.2"],
        ["3", "6.5", "2.8", "4.6", "1.5"],
        ["4", "7.6", "3.0", "6.6", "2.2"],
        ["5", "150", "3.5", "1.4", "0.2"],
        ["6", "5.1", "abc", "1.4", "0.2"],
    ]
    assert [row[5] for row in rows[:3]] == list(PRESETS)
    assert [row[-1] for row in rows[:3]] == ["", "", ""]
    assert rows[3][5] == rows[4][5] == ""
    assert rows[3][-1] == served.refusal([150, 3.5, 1.4, 0.2])
    assert rows[4][-1] == served.refusal([5.1, "abc", 1.4, 0.2])
    assert tab.page.locator("#batch-table tr.refused").count() == 2
    status, body = served.server.request(
        "POST",
        PREDICT,
        {"instances": [PRESETS["setosa"]], "parameters": {"probabilities": True}},
        {"Content-Type": "application/json"},
    )
    assert status == 200
    expected = body["predictions"][0]
    assert float(rows[0][6]) == pytest.approx(expected["confidence"], abs=1e-6)
    assert [float(value) for value in rows[0][7:10]] == pytest.approx(
        list(expected["probabilities"].values()), abs=1e-6
    )

    with tab.page.expect_download(timeout=WAIT_MS) as download:
        tab.page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename == "predictions.csv"
    with open(download.value.path(), newline="") as downloaded:
        assert list(csv.reader(downloaded)) == table


def test_a_new_version_updates_the_model_card_and_its_text_is_never_markup(
    served: Served, open_page: OpenPage
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")
    fact = tab.page.locator("#card-facts dd[data-fact='version']")
    assert fact.inner_text() == served.metadata()["version"]

    tab.prediction()
    predictions_before = tab.requests.count(f"{tab.origin}{PREDICT}")
    markup = '<img id="injected" src="x"><script>document.title = "owned"</script>'
    version = served.publish(
        served.trained,
        algorithm=f"forest {markup}",
        hyperparameters={"n_estimators": 5, markup: markup},
    )

    expect(fact).to_have_text(version, timeout=WAIT_MS)
    # The prediction follows the new version too.
    tab.page.locator(SETTLED).wait_for(timeout=WAIT_MS)
    assert tab.requests.count(f"{tab.origin}{PREDICT}") > predictions_before
    metadata = served.metadata()
    facts = dict(
        zip(
            tab.page.locator("#card-facts dd").evaluate_all(
                "items => items.map(item => item.dataset.fact)"
            ),
            tab.page.locator("#card-facts dd").all_inner_texts(),
            strict=True,
        )
    )
    assert facts["algorithm"] == f"forest {markup}"
    assert facts["accuracy"] == f"{metadata['metrics']['accuracy'] * 100:.1f}%"
    assert facts["f1"] == f"{metadata['metrics']['f1_macro'] * 100:.1f}%"
    assert tab.page.locator("#hyperparameters dt").all_inner_texts() == [
        "n_estimators",
        markup,
    ]
    assert tab.page.locator("#hyperparameters dd").all_inner_texts() == ["5", markup]
    assert tab.page.locator("#injected, #card script").count() == 0
    assert tab.page.title() != "owned"
    matrix = table_cells(tab, "#confusion")
    assert [row[1:] for row in matrix[1:]] == [
        [str(count) for count in row] for row in metadata["metrics"]["confusion_matrix"]
    ]
    shades = tab.page.locator("#confusion tbody td").evaluate_all(
        "cells => cells.map(cell => getComputedStyle(cell).backgroundColor)"
    )
    assert len(set(shades)) > 1


def test_the_inputs_follow_another_models_features_and_hide_the_presets(
    served: Served, open_page: OpenPage
) -> None:
    names = ["stem_length", "stem_width", "bud_length", "bud_width"]

    def rename(metadata: dict[str, Any]) -> None:
        stats = metadata["feature_stats"]
        metadata["feature_names"] = names
        metadata["feature_stats"] = dict(zip(names, stats.values(), strict=True))
        metadata["features"] = [
            {**feature, "name": name}
            for feature, name in zip(metadata["features"], names, strict=True)
        ]

    # The predictor serves only models with the four Iris features today.
    tab = open_page(served.server, metadata=rename)
    tab.wait_for_status("ready")

    assert tab.page.locator("#features label").all_inner_texts() == [
        name.replace("_", " ") for name in names
    ]
    assert tab.page.locator("#presets").is_hidden()
    assert tab.page.locator("#batch-columns").inner_text() == ", ".join(names)
    assert tab.prediction() != ""


def test_the_inputs_read_the_schemas_units_and_accepted_ranges(
    served: Served, open_page: OpenPage
) -> None:
    tab = open_page(served.server)
    tab.wait_for_status("ready")

    for index, feature in enumerate(served.metadata()["features"]):
        name = feature["name"].replace("_", " ")
        number = tab.page.get_by_role("spinbutton", name=name)
        assert float(str(number.get_attribute("min"))) == feature["min"]
        assert float(str(number.get_attribute("max"))) == feature["max"]
        slider = tab.page.get_by_role("slider", name=name)
        low, high = (float(str(slider.get_attribute(end))) for end in ("min", "max"))
        assert feature["min"] <= low < feature["min"] + 0.1
        assert feature["max"] - 0.1 < high <= feature["max"]
        assert tab.page.locator(f"#feature-{index}-note").inner_text() == (
            f"accepted {feature['min']:g} to {feature['max']:g} {feature['unit']}"
        )
    assert tab.page.locator("#features .unit").all_inner_texts() == ["cm"] * 4


def test_the_page_reads_the_metadata_of_a_predictor_without_a_schema(
    served: Served, open_page: OpenPage
) -> None:
    """Before the schema, the metadata had only feature_names, class_names and the
    training statistics: the sliders span the training range, without a unit."""

    def without_schema(metadata: dict[str, Any]) -> None:
        del metadata["features"], metadata["classes"]

    tab = open_page(served.server, metadata=without_schema)
    tab.wait_for_status("ready")

    stats = served.metadata()["feature_stats"]["petal_length"]
    slider = tab.page.get_by_role("slider", name="petal length")
    assert float(str(slider.get_attribute("min"))) == pytest.approx(stats["min"])
    assert float(str(slider.get_attribute("max"))) == pytest.approx(stats["max"])
    assert tab.page.locator("#feature-2-note").inner_text() == (
        f"seen in training {stats['min']:g} to {stats['max']:g}"
    )
    assert tab.page.locator("#presets").is_visible()
    tab.page.get_by_role("button", name="virginica").click()
    tab.wait_for_label("virginica")


def test_the_page_and_its_files_carry_a_strict_content_security_policy(
    served: Served,
) -> None:
    for path in ["/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css"]:
        connection = served.server.connection()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        assert response.status == 200, path
        policy = {
            directive.split()[0]: directive.split()[1:]
            for directive in response.getheader("content-security-policy", "").split(
                ";"
            )
        }
        assert policy["default-src"] == ["'none'"]
        assert policy["script-src"] == ["'self'"]
        assert policy["style-src"] == ["'self'"]
        assert policy["connect-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert response.getheader("x-content-type-options") == "nosniff"


def test_the_api_answers_without_the_pages_headers(served: Served) -> None:
    connection = served.server.connection()
    try:
        connection.request(
            "POST",
            PREDICT,
            body=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.read() == b'{"predictions":[0]}'
    finally:
        connection.close()
    assert response.getheader("content-security-policy") is None
