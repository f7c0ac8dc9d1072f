"""Trainers racing to publish: the pointer is a compare-and-swap on both backends.

Each pair runs the real publish path (judge, stage, swap, prune) in two forked
processes started together on a fresh store, with models trained beforehand; a few
pairs are two whole ``python -m training`` processes, started together.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Server
from tests.unit.test_training import job_environment
from training.gate import ExitCode
from training.lifecycle import publish_if_better, verified_pointer
from training.settings import TrainingSettings
from training.store import ModelStore, open_store
from training.store.base import PointerState
from training.store.directory import LOCK_NAME, STALE_LOCK_SECONDS
from training.store.errors import PointerConflictError
from training.train import TrainedModel, train

PAIRS = 20
CLI_PAIRS = 3
CONTENDERS = {
    "stump": TrainingSettings(algorithm="decision_tree", max_depth=1),
    "tree": TrainingSettings(algorithm="decision_tree", max_depth=2),
    "forest": TrainingSettings(n_estimators=5),
    "forest_seed_7": TrainingSettings(n_estimators=5, random_state=7, max_depth=2),
}


# The same models as flags of python -m training (the held-out accuracy does not
# depend on the folds, so two of them keep each run short).
CLI_CONTENDERS = {
    "stump": ("--algorithm", "decision_tree", "--max_depth", "1"),
    "tree": ("--algorithm", "decision_tree", "--max_depth", "2"),
    "forest": ("--n_estimators", "5"),
}


@pytest.fixture(scope="module")
def contenders() -> dict[str, TrainedModel]:
    return {name: train(settings) for name, settings in CONTENDERS.items()}


def _race(
    uri: str,
    trained: TrainedModel,
    start: Barrier,
    results: Any,
    name: str,
) -> None:
    start.wait(timeout=30)
    store = open_store(uri)
    settings = TrainingSettings(model_uri=uri, min_accuracy=0.0, keep_versions=5)
    outcome = publish_if_better(store, trained, settings, by=name)
    version = outcome.published.version if outcome.published else None
    results.put((name, int(outcome.verdict.exit_code), version, outcome.attempts))


def check_store(
    store: ModelStore, best: float, published: list[str], outcomes: object
) -> None:
    """The better model is current, every published version is complete and kept, a
    loser left nothing, and the history is an unbroken chain of publishes."""
    current = store.load_current()
    assert current is not None
    assert current.metadata.metrics.accuracy == best, outcomes
    assert store.list_versions() == published, outcomes
    for version in published:
        verified_pointer(store, version)
    chain = [change.version for change in store.history()]
    assert sorted(chain) == published
    assert [change.previous_version for change in store.history()] == [
        None,
        *chain[:-1],
    ]


def race_pairs(
    uri_for: Callable[[int], str], contenders: dict[str, TrainedModel]
) -> int:
    """Run PAIRS races, check each one, and return how many swaps conflicted."""
    context = multiprocessing.get_context("fork")
    names = list(contenders)
    conflicts = 0
    for pair in range(PAIRS):
        uri = uri_for(pair)
        first, second = names[pair % len(names)], names[(pair + 1) % len(names)]
        start = context.Barrier(2)
        results = context.Queue()
        racers = [
            context.Process(
                target=_race, args=(uri, contenders[name], start, results, name)
            )
            for name in (first, second)
        ]
        for racer in racers:
            racer.start()
        outcomes = [results.get(timeout=60) for _ in racers]
        for racer in racers:
            racer.join(timeout=30)
            assert racer.exitcode == 0
        conflicts += sum(attempts > 1 for *_, attempts in outcomes)

        published = sorted(version for _, _, version, _ in outcomes if version)
        assert {code for _, code, _, _ in outcomes} <= {
            ExitCode.PUBLISHED,
            ExitCode.WORSE_THAN_CURRENT,
        }
        best = max(contenders[name].card.metrics.accuracy for name in (first, second))
        check_store(open_store(uri), best, published, outcomes)
    return conflicts


def race_cli_pairs(
    uri_for: Callable[[int], str],
    contenders: dict[str, TrainedModel],
    env: dict[str, str] | None = None,
) -> None:
    """Run CLI_PAIRS races of two ``python -m training`` processes started together."""
    names = list(CLI_CONTENDERS)
    for pair in range(CLI_PAIRS):
        uri = uri_for(pair)
        pair_names = (names[pair % len(names)], names[(pair + 1) % len(names)])
        racers = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "training", "--model_uri", uri),
                    *("--min_accuracy", "0", "--cv_folds", "2"),
                    *CLI_CONTENDERS[name],
                ],
                env=job_environment(env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in pair_names
        ]
        outcomes = [
            (name, racer.communicate(timeout=180)[1], racer.returncode)
            for name, racer in zip(pair_names, racers, strict=True)
        ]
        codes = {code for *_, code in outcomes}
        # The loser either published first and was superseded, or was refused.
        assert codes <= {ExitCode.PUBLISHED, ExitCode.WORSE_THAN_CURRENT}, outcomes
        store = open_store(uri)
        published = sorted(change.version for change in store.history())
        assert len(published) == sum(code == 0 for *_, code in outcomes), outcomes
        best = max(contenders[name].card.metrics.accuracy for name in pair_names)
        check_store(store, best, published, outcomes)


def test_racing_trainers_on_a_directory_leave_the_better_model(
    tmp_path: Path, contenders: dict[str, TrainedModel]
) -> None:
    conflicts = race_pairs(lambda pair: str(tmp_path / f"pair-{pair}"), contenders)

    assert conflicts > 0, "no race happened: the test proved nothing"


def test_racing_trainers_on_s3_leave_the_better_model(
    moto_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    contenders: dict[str, TrainedModel],
) -> None:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = f"race-{secrets.token_hex(4)}"

    conflicts = race_pairs(lambda pair: f"s3://{bucket}/pair-{pair}", contenders)

    assert conflicts > 0, "no race happened: the test proved nothing"


@pytest.mark.parametrize("backend", ["directory", "moto"])
def test_a_stale_swap_is_refused_and_writes_nothing(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    contenders: dict[str, TrainedModel],
) -> None:
    if backend == "moto":
        server: S3Server = request.getfixturevalue("moto_server")
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        uri = f"s3://cas-{secrets.token_hex(4)}/iris"
    else:
        uri = str(tmp_path / "models")
    store = open_store(uri)
    trained = contenders["forest"]
    first = store.stage(b"first", trained.card)
    second = store.stage(b"second", trained.card)
    empty = store.read_pointer_state()
    store.swap(first.pointer, empty, "publish", "")

    with pytest.raises(PointerConflictError):
        store.swap(second.pointer, empty, "publish", "")
    with pytest.raises(PointerConflictError):
        store.swap(second.pointer, PointerState("stale", first.pointer), "publish", "")

    assert store.read_pointer() == first.pointer
    store.swap(second.pointer, store.read_pointer_state(), "publish", "")
    assert store.read_pointer() == second.pointer


def test_a_lock_left_by_a_dead_writer_is_broken(
    tmp_path: Path,
    contenders: dict[str, TrainedModel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store(str(tmp_path / "models"))
    staged = store.stage(b"model", contenders["forest"].card)
    lock = tmp_path / "models" / LOCK_NAME
    lock.write_text("node-7 pid=41 crashed")
    stale = time.time() - STALE_LOCK_SECONDS - 1
    os.utime(lock, (stale, stale))

    store.swap(staged.pointer, store.read_pointer_state(), "publish", "")

    assert store.read_pointer() == staged.pointer
    assert not lock.exists()
    assert "broke a stale pointer lock" in caplog.text
    assert [p.name for p in lock.parent.iterdir() if p.name.startswith(".")] == [
        ".staging"
    ]


def test_racing_training_processes_leave_the_better_model(
    tmp_path: Path,
    moto_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    contenders: dict[str, TrainedModel],
) -> None:
    race_cli_pairs(lambda pair: str(tmp_path / f"cli-{pair}"), contenders)
    for pair in range(CLI_PAIRS):
        assert list((tmp_path / f"cli-{pair}" / ".staging").iterdir()) == []

    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = f"cli-race-{secrets.token_hex(4)}"
    race_cli_pairs(
        lambda pair: f"s3://{bucket}/pair-{pair}",
        contenders,
        moto_server.environment(),
    )
