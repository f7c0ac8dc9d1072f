"""versions, rollback and promote: the pointer moves through the same contract."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from tests.unit.test_training import run_training
from training.gate import ExitCode
from training.store import open_store
from training.store.layout import MODEL_FILE, version_key
from training.train import TrainedModel


def versions(models: str) -> dict[str, Any]:
    listed = run_training("versions", "--model_uri", models, "--json")
    assert listed.returncode == 0, listed.stderr
    return dict(json.loads(listed.stdout))


def publish_two(models: Path, trained: TrainedModel) -> tuple[str, str]:
    store = open_store(str(models))
    for _ in range(2):
        store.publish(trained.estimator, trained.card, keep_versions=5)
    first, second = store.list_versions()
    return first, second


def test_rollback_and_promote_move_the_pointer_and_record_why(
    tmp_path: Path, trained: TrainedModel
) -> None:
    models = str(tmp_path / "models")
    store = open_store(models)
    first, second = publish_two(tmp_path / "models", trained)

    rolled = run_training(
        "rollback", "--model_uri", models, "--reason", "bad predictions"
    )

    assert rolled.returncode == 0, rolled.stderr
    assert store.read_pointer().version == first  # type: ignore[union-attr]
    promoted = run_training("promote", second, "--model_uri", models)
    assert promoted.returncode == 0, promoted.stderr
    assert store.read_pointer().version == second  # type: ignore[union-attr]

    listing = versions(models)
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
    tmp_path: Path, trained: TrainedModel
) -> None:
    models = tmp_path / "models"
    first, second = publish_two(models, trained)
    store = open_store(str(models))
    (models / version_key(first, MODEL_FILE)).write_bytes(b"tampered")

    missing = run_training(
        "rollback", "--to", "20200101T000000000000Z-abcdef", "--model_uri", str(models)
    )
    tampered = run_training("rollback", "--model_uri", str(models))

    assert missing.returncode == ExitCode.VERSION_UNUSABLE
    assert "no version 20200101T000000000000Z-abcdef" in missing.stderr
    assert tampered.returncode == ExitCode.VERSION_UNUSABLE
    assert "sha256" in tampered.stderr
    assert store.read_pointer().version == second  # type: ignore[union-attr]
    assert [change.action for change in store.history()] == ["publish", "publish"]


def test_rollback_with_nothing_published_is_a_clear_error(tmp_path: Path) -> None:
    result = run_training("rollback", "--model_uri", str(tmp_path / "empty"))

    assert result.returncode == ExitCode.VERSION_UNUSABLE
    assert "nothing is published" in result.stderr
