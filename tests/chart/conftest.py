"""Fixtures of the chart tests: a local cluster of network namespaces."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart import sandbox


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[sandbox.Cluster]:
    """A node and the pods' namespaces, deleted with every process when the test ends.

    Needs root; elsewhere the test is skipped, unless IRIS_REQUIRE_NETNS=1 (CI) makes
    that a failure.
    """
    reason = sandbox.unavailable()
    if reason is not None:
        if os.environ.get("IRIS_REQUIRE_NETNS") == "1":
            pytest.fail(f"IRIS_REQUIRE_NETNS=1 but pods cannot run here: {reason}")
        pytest.skip(f"pods cannot run here: {reason}")
    running = sandbox.Cluster(tmp_path)
    yield running
    running.close()
