"""The training program: data, evaluation, the gate, and the CLI as a Job runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import S3Server
from training.data import IRIS_CLASSES, load_split
from training.gate import Comparison, ExitCode, compare_recorded, judge
from training.settings import TrainingSettings, parse_settings
from training.store import open_store
from training.train import train


def job_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its IRIS_* variables, plus env."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    return {**environment, **(env or {})}


def run_training(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m training`` as the Job does, with no IRIS_* from this process."""
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        env=job_environment(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_split_is_stratified_and_reproducible() -> None:
    split = load_split(test_fraction=0.2, random_state=42)
    again = load_split(test_fraction=0.2, random_state=42)

    assert (len(split.y_train), len(split.y_test)) == (120, 30)
    assert sorted(split.y_test.tolist()) == [0] * 10 + [1] * 10 + [2] * 10
    assert (split.x_test == again.x_test).all()
    assert split.dataset_sha256 == again.dataset_sha256


@pytest.mark.parametrize("algorithm", ["random_forest", "decision_tree"])
def test_training_scores_the_held_out_rows(algorithm: str) -> None:
    card = train(TrainingSettings(algorithm=algorithm)).card

    assert card.metrics.accuracy >= 0.9
    assert card.metrics.test_rows == 30
    assert sum(map(sum, card.metrics.confusion_matrix)) == 30
    assert 0.9 <= card.metrics.cv_accuracy_mean <= 1.0
    assert card.metrics.cv_folds == 5
    assert card.class_names == IRIS_CLASSES
    assert set(card.feature_stats) == set(card.feature_names)


def versus(accuracy: float, current: float | None) -> Comparison | None:
    """The challenger against a current model, both scored on 30 rows."""
    if current is None:
        return None
    return compare_recorded(accuracy, 30, current, 30, "current")


def test_the_gate_refuses_below_the_minimum_even_when_forced() -> None:
    verdict = judge(0.85, min_accuracy=0.9, comparison=None, force=True)

    assert verdict.exit_code is ExitCode.BELOW_MIN_ACCURACY
    assert not verdict.publish
    assert "0.8500 is below the minimum 0.9000" in verdict.reason


def test_the_gate_refuses_a_model_worse_than_the_current_one() -> None:
    verdict = judge(0.93, 0.9, versus(0.93, 0.97), force=False)

    assert verdict.exit_code is ExitCode.WORSE_THAN_CURRENT
    assert "0.9300 against version current's 0.9700" in verdict.reason


def test_force_publishes_a_model_worse_than_the_current_one() -> None:
    verdict = judge(0.93, 0.9, versus(0.93, 0.97), force=True)

    assert verdict.publish
    assert "forced" in verdict.reason


@pytest.mark.parametrize("current", [None, 0.93, 0.97])
def test_the_gate_publishes_a_model_at_least_as_good(current: float | None) -> None:
    assert judge(0.97, 0.9, versus(0.97, current), force=False).publish


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_N_ESTIMATORS", "7")
    monkeypatch.setenv("IRIS_MODEL_URI", "s3://models/iris")

    settings = parse_settings(["--n_estimators", "9", "--max_depth", "null"])

    assert (settings.n_estimators, settings.max_depth) == (9, None)
    assert settings.model_uri == "s3://models/iris"


def test_null_means_no_depth_limit_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IRIS_MAX_DEPTH", "null")

    assert parse_settings([]).max_depth is None


def test_a_bad_value_is_a_usage_error() -> None:
    result = run_training("--n_estimators", "0")

    assert result.returncode == ExitCode.USAGE
    assert (
        "invalid setting: n_estimators: Input should be greater than or equal to 1"
        in (result.stderr)
    )


def test_the_job_publishes_and_reports(tmp_path: Path) -> None:
    result = run_training("--model_uri", str(tmp_path))

    assert result.returncode == ExitCode.PUBLISHED, result.stderr
    current = open_store(str(tmp_path)).load_current()
    assert current is not None
    assert (
        f"PUBLISHED to {tmp_path} as version {current.metadata.version}"
        in result.stdout
    )
    assert "accuracy (held out)         0.9667" in result.stdout
    assert "confusion matrix" in result.stdout
    assert "level=INFO logger=training.store.base published version=" in result.stderr


def test_the_job_refuses_a_worse_model_and_writes_nothing(tmp_path: Path) -> None:
    assert run_training("--model_uri", str(tmp_path)).returncode == ExitCode.PUBLISHED
    store = open_store(str(tmp_path))
    before = (store.read_pointer(), store.list_versions())

    worse = run_training("--model_uri", str(tmp_path), "--algorithm", "decision_tree")

    assert worse.returncode == ExitCode.WORSE_THAN_CURRENT
    assert "NOT PUBLISHED (exit 4): held-out accuracy 0.9333 against version" in (
        worse.stdout
    )
    assert "difference -0.0333" in worse.stdout
    assert (store.read_pointer(), store.list_versions()) == before

    forced = run_training(
        "--model_uri", str(tmp_path), "--algorithm", "decision_tree", "--force", "true"
    )

    assert forced.returncode == ExitCode.PUBLISHED
    assert len(store.list_versions()) == 2


def test_the_job_refuses_a_model_below_the_minimum(tmp_path: Path) -> None:
    result = run_training(
        "--model_uri", str(tmp_path), "--algorithm", "decision_tree", "--max_depth", "1"
    )

    assert result.returncode == ExitCode.BELOW_MIN_ACCURACY
    assert "below the minimum 0.9000" in result.stdout
    assert not tmp_path.joinpath("latest.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_the_job_publishes_to_a_bucket(s3_server: S3Server, bucket_uri: str) -> None:
    result = run_training("--model_uri", bucket_uri, env=s3_server.environment())

    assert result.returncode == ExitCode.PUBLISHED, result.stderr
    assert f"PUBLISHED to {bucket_uri} as version" in result.stdout


def test_a_wrong_secret_fails_with_a_clear_message_not_a_traceback(
    s3_server: S3Server, bucket_uri: str
) -> None:
    env = {**s3_server.environment(), "IRIS_S3_SECRET_ACCESS_KEY": "wrong"}

    result = run_training("--model_uri", bucket_uri, env=env)

    assert result.returncode == ExitCode.STORE_ERROR
    assert "refused the request: SignatureDoesNotMatch" in result.stderr
    assert "Traceback" not in result.stderr
