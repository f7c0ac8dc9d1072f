"""The values table in charts/iris/README.md is the one values.yaml's comments give."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.chart import values_table
from tests.chart.render import CHART


def test_the_committed_table_is_current() -> None:
    readme = (CHART / "README.md").read_text()
    generated = values_table.table((CHART / "values.yaml").read_text())
    assert values_table.with_table(readme, generated) == readme, (
        "charts/iris/README.md's values table is stale: run make chart-docs"
    )
    assert values_table.main(["--check"]) == 0


def test_every_value_has_a_row(tmp_path: Path) -> None:
    rows = {
        key
        for group in values_table.groups((CHART / "values.yaml").read_text())
        for key, _, _ in group.rows
    }
    assert {"ingress.className", "httpRoute.parentRefs", "image.tag"} <= rows
    assert "predictor.settings.maxRows" in rows
    assert "podSecurityContext" in rows


@pytest.fixture
def chart_copy(tmp_path: Path) -> tuple[Path, Path]:
    values = tmp_path / "values.yaml"
    readme = tmp_path / "README.md"
    shutil.copy(CHART / "values.yaml", values)
    shutil.copy(CHART / "README.md", readme)
    return values, readme


def test_a_changed_comment_makes_the_table_stale(
    chart_copy: tuple[Path, Path],
) -> None:
    values, readme = chart_copy
    comment = "  # The Service's port.\n"
    text = values.read_text()
    assert text.count(comment) == 1
    values.write_text(text.replace(comment, "  # The Service's port, renamed.\n"))
    arguments = ["--values", str(values), "--readme", str(readme)]
    assert values_table.main([*arguments, "--check"]) == 1
    assert values_table.main(arguments) == 0
    assert "| `service.port` | `80` | The Service's port, renamed. |" in (
        readme.read_text()
    )
    assert values_table.main([*arguments, "--check"]) == 0


def test_a_changed_default_makes_the_table_stale(
    chart_copy: tuple[Path, Path],
) -> None:
    values, readme = chart_copy
    values.write_text(values.read_text().replace("  port: 80\n", "  port: 8000\n"))
    arguments = ["--values", str(values), "--readme", str(readme), "--check"]
    assert values_table.main(arguments) == 1


def test_a_value_without_a_comment_is_refused(chart_copy: tuple[Path, Path]) -> None:
    values, _ = chart_copy
    text = values.read_text().replace("  # The Service's port.\n", "")
    with pytest.raises(ValueError, match=r"service\.port has no comment above it"):
        values_table.table(text)
