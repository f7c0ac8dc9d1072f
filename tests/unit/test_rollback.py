"""versions, rollback and promote: the pointer moves through the same contract.

The commands run in process (``training.__main__.main``) where what they do to the
store is the point; one runs as a process, for its exit status.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_training import run_training
from training.__main__ import main
from training.gate import ExitCode
from training.store import open_store
from training.store.layout import MODEL_FILE, version_key
from training.train import TrainedModel


def versions(models: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["versions", "--model_uri", models, "--json"]) == ExitCode.PUBLISHED
    return dict(json.loads(capsys.readouterr().out))


def publish_two(models: Path, trained: TrainedModel) -> tuple[str, str]:
    store = open_store(str(models))
    for _ in range(2):
        store.publish(trained.estimator, trained.card, keep_versions=5)
    first, second = store.list_versions()
    return first, second


def test_rollback_and_promote_move_the_pointer_and_record_why(
    tmp_path: Path, trained: TrainedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    models = str(tmp_path / "models")
    store = open_store(models)
    first, second = publish_two(tmp_path / "models", trained)

    rolled = main(["rollback", "--model_uri", models, "--reason", "bad predictions"])

    assert rolled == ExitCode.PUBLISHED
    assert store.read_pointer().version == first  # type: ignore[union-attr]
    assert main(["promote", second, "--model_uri", models]) == ExitCode.PUBLISHED
    assert store.read_pointer().version == second  # type: ignore[union-attr]

    listing = versions(models, capsys)
    assert [row["version"] for row in listing["versions"]] == [first, second]
    assert [row["current"] for row in listing["versions"]] == [False, True]
    assert all(row["algorithm"] == "random_forest" for row in listing["versions"])
    assert all(len(row["evaluation_sha256"]) == 64 for row in listing["versions"])
    history = [
        (change["action"], change["version"], change["previous_version"])
        for change in listing["history"]
    ]
    assert history == [
        ("publish", first, None),
        ("publish", second, first),
        ("rollback", first, second),
        ("promote", second, first),
    ]
    rollback = listing["history"][2]
    assert (rollback["reason"], rollback["by"]) == (
        "bad predictions",
        socket.gethostname(),
    )


def test_rollback_refuses_a_missing_or_tampered_version_and_changes_nothing(
    tmp_path: Path, trained: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    first, second = publish_two(models, trained)
    store = open_store(str(models))
    (models / version_key(first, MODEL_FILE)).write_bytes(b"tampered")

    missing = main(
        [
            "rollback",
            "--to",
            "20200101T000000000000Z-abcdef",
            "--model_uri",
            str(models),
        ]
    )
    assert "no version 20200101T000000000000Z-abcdef" in caplog.text
    caplog.clear()
    tampered = main(["rollback", "--model_uri", str(models)])

    assert missing == ExitCode.VERSION_UNUSABLE
    assert tampered == ExitCode.VERSION_UNUSABLE
    assert "sha256" in caplog.text
    assert store.read_pointer().version == second  # type: ignore[union-attr]
    assert [change.action for change in store.history()] == ["publish", "publish"]


def test_rollback_with_nothing_published_is_a_clear_error(tmp_path: Path) -> None:
    result = run_training("rollback", "--model_uri", str(tmp_path / "empty"))

    assert result.returncode == ExitCode.VERSION_UNUSABLE
    assert "nothing is published" in result.stderr
