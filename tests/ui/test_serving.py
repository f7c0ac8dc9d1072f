"""How the page is shipped and switched: its files, the wheel, --ui and the chart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from predictor.settings import parse_settings
from predictor.ui import STATIC_DIR
from tests.api.conftest import PredictorProcess
from tests.chart.pods import describe
from tests.chart.render import RELEASE, notes, render

REPO = Path(__file__).resolve().parents[2]


class References(HTMLParser):
    """Every URL an HTML document refers to, from its src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "script" and not dict(attrs).get("src"):
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")


def test_the_page_refers_only_to_its_own_files_by_relative_urls() -> None:
    page = References()
    page.feed((STATIC_DIR / "index.html").read_text())

    assert page.inline == []
    assert sorted(page.urls) == ["app.js", "favicon.svg", "style.css"]
    for url in page.urls:
        assert (STATIC_DIR / url).is_file(), url


def test_the_script_and_the_styles_call_nothing_by_an_absolute_url() -> None:
    script = (STATIC_DIR / "app.js").read_text()
    styles = (STATIC_DIR / "style.css").read_text()
    icon = (STATIC_DIR / "favicon.svg").read_text()

    api_paths = re.findall(r"[`\"']([^`\"']*v1/[^`\"']*)[`\"']", script)
    assert api_paths, "the script calls the API somewhere"
    assert all(path.startswith("../v1/") for path in api_paths), api_paths
    assert re.findall(r"\b(?:import|innerHTML|outerHTML|eval)\b", script) == []
    assert "://" not in script
    assert "url(" not in styles
    assert "@import" not in styles
    # The SVG namespace names, never fetches.
    assert re.findall(r"\w+://[^\"]*", icon) == ["http://www.w3.org/2000/svg"]


def test_the_wheel_ships_the_page(tmp_path: Path) -> None:
    # What the Dockerfile copies and installs, built away from the checkout's build/.
    source = tmp_path / "source"
    source.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO / name, source / name)
    for package in ["training", "predictor"]:
        shutil.copytree(
            REPO / package,
            source / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(source),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "wheels").glob("iris-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for path in STATIC_DIR.iterdir():
        assert f"predictor/ui_static/{path.name}" in shipped


def test_ui_false_turns_the_page_off(tmp_path: Path) -> None:
    server = PredictorProcess(
        tmp_path / "predictor.log", "--model_uri", str(tmp_path), "--ui", "false"
    )
    try:
        for path in ["/ui/", "/ui/app.js"]:
            status, body = server.request("GET", path)
            assert status == 404, path
            assert body == {"error": "Not Found"}
        assert server.request("GET", "/") == (200, {"status": "alive"})
    finally:
        server.stop()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_charts_ui_value_reaches_the_predictor(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"ui": {"enabled": enabled}}
    manifests = render(values)
    container = describe(manifests.get("Deployment", RELEASE), manifests).container(
        "predictor"
    )
    for name in [name for name in os.environ if name.startswith("IRIS_")]:
        monkeypatch.delenv(name)
    for name, value in container.environment.items():
        monkeypatch.setenv(name, value)
    settings, _ = parse_settings(list(container.argv[3:]))

    assert settings.ui is enabled
    assert ("http://localhost:8080/ui/" in notes(values)) is enabled
