"""The values table of charts/iris/README.md, generated from values.yaml's comments.

The comment lines right above a key describe it; a `# -- Title` line starts a group.
A key is a row when its value is a scalar, a list, or a mapping none of whose keys has
a comment; a mapping with commented keys gives a row per key instead.

    python -m tests.chart.values_table          # rewrite the table in the README
    python -m tests.chart.values_table --check  # exit 1 if the table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "iris"
START = "<!-- values-table:start (make chart-docs writes this table) -->"
END = "<!-- values-table:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(\s|$)")
GROUP_PREFIX = "-- "


@dataclass
class Group:
    title: str
    description: list[str]
    rows: list[tuple[str, str, str]] = field(default_factory=list)


def _comments_by_path(text: str, values: dict[str, Any]) -> dict[str, list[str]]:
    """Each key path's comment lines; keys inside list items are not values' keys."""
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    parents: list[tuple[int, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.removeprefix("#").strip())
            continue
        match = KEY_LINE.match(line)
        if match is None:
            pending = []
            continue
        indent = len(match["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = ".".join([*(key for _, key in parents), match["key"]])
        if _lookup(values, path) is not _MISSING:
            comments[path] = pending
            parents.append((indent, match["key"]))
        pending = []
    return comments


_MISSING = object()


def _lookup(values: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(values, dict) or key not in values:
            return _MISSING
        values = values[key]
    return values


def _text(text: str) -> str:
    """Markdown that shows the comment as written: <owner> is not an HTML tag."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def groups(values_text: str) -> list[Group]:
    """The values' groups and rows (key, default, description), in the file's order."""
    values: dict[str, Any] = yaml.safe_load(values_text)
    comments = _comments_by_path(values_text, values)
    found: list[Group] = []
    rows: list[str] = []
    for path, lines in comments.items():
        if any(path.startswith(f"{row}.") for row in rows):
            continue
        value = _lookup(values, path)
        children = [f"{path}.{key}" for key in value] if isinstance(value, dict) else []
        is_row = not any(comments.get(child) for child in children)
        if "." not in path and lines and lines[0].startswith(GROUP_PREFIX):
            title, lines = lines[0].removeprefix(GROUP_PREFIX), lines[1:]
            # A group's text describes its one key, or else the group.
            found.append(Group(title, [] if is_row else lines))
        if not is_row:
            continue
        rows.append(path)
        if not found:
            raise ValueError(f"{path} comes before the first `# -- Title` group")
        if not lines:
            raise ValueError(f"{path} has no comment above it")
        default = json.dumps(value, separators=(", ", ": "))
        found[-1].rows.append((path, default, " ".join(lines)))
    return found


def table(values_text: str) -> str:
    """The markdown of every group: its title, what it is, a table of its keys."""
    parts: list[str] = []
    for group in groups(values_text):
        parts.append(f"### {group.title}\n")
        if group.description:
            parts.append(_text(" ".join(group.description)) + "\n")
        parts.append("| Key | Default | Description |\n| --- | --- | --- |")
        for key, default, description in group.rows:
            described = _cell(_text(description))
            parts.append(f"| `{key}` | `{_cell(default)}` | {described} |")
        parts.append("")
    return "\n".join(parts)


def with_table(readme: str, generated: str) -> str:
    """The README with the text between the markers replaced by the table."""
    before, start, rest = readme.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the README needs the markers {START} and {END}")
    return f"{before}{START}\n\n{generated}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=Path, default=CHART / "values.yaml")
    parser.add_argument("--readme", type=Path, default=CHART / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if stale")
    arguments = parser.parse_args(argv)
    readme = arguments.readme.read_text()
    current = with_table(readme, table(arguments.values.read_text()))
    if current == readme:
        return 0
    if arguments.check:
        print(
            f"{arguments.readme}: the values table is stale; run make chart-docs",
            file=sys.stderr,
        )
        return 1
    arguments.readme.write_text(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
