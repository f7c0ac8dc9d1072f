"""Moving the pointer: publish behind the gate, roll back, promote, list versions.

Every move is a compare-and-swap against the pointer as it was read, so two
writers cannot both win, and every move is recorded in the store's history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from training.gate import (
    Comparison,
    ExitCode,
    Verdict,
    compare_on_shared_rows,
    compare_recorded,
    judge,
)
from training.settings import TrainingSettings
from training.store import (
    IntegrityError,
    ModelMetadata,
    ModelStore,
    Pointer,
    StoreError,
)
from training.store.base import PointerState
from training.store.errors import PointerConflictError
from training.store.layout import METADATA_FILE, sha256_hex, version_key
from training.train import TrainedModel

log = logging.getLogger(__name__)

# A trainer judges again this many times when other trainers keep publishing.
JUDGE_ATTEMPTS = 5


@dataclass(frozen=True)
class Outcome:
    """What a training run did to the store."""

    verdict: Verdict
    published: ModelMetadata | None = None
    attempts: int = 1
    # Pruning after a successful publish failed: the model is published all the same.
    cleanup_error: str | None = None


def compare_with_champion(
    store: ModelStore, state: PointerState, trained: TrainedModel
) -> Comparison | None:
    """The challenger against the model the pointer named, or None if unusable."""
    if state.pointer is None:
        log.info("no current model uri=%s", store.uri)
        return None
    try:
        champion = store.load(state.pointer)
    except IntegrityError as error:
        log.warning("current model unusable, a new one may replace it: %s", error)
        return None
    recorded = champion.metadata
    split = trained.split
    if recorded.evaluation_sha256 != trained.card.evaluation_sha256:
        log.warning(
            "evaluation sets differ, comparing recorded accuracies "
            "champion=%s champion_evaluation=%s challenger_evaluation=%s",
            recorded.version,
            recorded.evaluation_sha256,
            trained.card.evaluation_sha256,
        )
        return compare_recorded(
            trained.card.metrics.accuracy,
            trained.card.metrics.test_rows,
            recorded.metrics.accuracy,
            recorded.metrics.test_rows,
            recorded.version,
        )
    try:
        champion_predicted = champion.estimator.predict(split.x_test)
    except ValueError as error:
        log.warning(
            "current model cannot score this data, a new one may replace it: %s", error
        )
        return None
    comparison = compare_on_shared_rows(
        trained.estimator.predict(split.x_test) == split.y_test,
        champion_predicted == split.y_test,
        recorded.version,
    )
    log.info(
        "compared champion=%s champion_accuracy=%.4f challenger_accuracy=%.4f "
        "difference=%.4f low=%.4f high=%.4f rows=%d",
        recorded.version,
        comparison.champion_accuracy,
        comparison.challenger_accuracy,
        comparison.difference,
        comparison.low,
        comparison.high,
        comparison.rows,
    )
    return comparison


def publish_if_better(
    store: ModelStore, trained: TrainedModel, settings: TrainingSettings, by: str
) -> Outcome:
    """Judge against the current model and publish only if it is still current.

    When another trainer moves the pointer first, judge again against its model.
    """
    staged = None
    for attempt in range(1, JUDGE_ATTEMPTS + 1):
        state = store.read_pointer_state()
        verdict = judge(
            trained.card.metrics.accuracy,
            settings.min_accuracy,
            compare_with_champion(store, state, trained),
            settings.force,
            settings.min_improvement,
        )
        if not verdict.publish:
            if staged is not None:
                store.discard(staged.metadata.version)
            return Outcome(verdict, attempts=attempt)
        if staged is None:
            staged = store.stage_estimator(trained.estimator, trained.card)
        try:
            store.swap(staged.pointer, state, "publish", settings.reason, by)
        except PointerConflictError:
            log.warning(
                "current model changed while judging, judging again attempt=%d",
                attempt,
            )
            continue
        try:
            store.prune(settings.keep_versions, current=staged.metadata.version)
        except StoreError as error:
            log.warning("published, but pruning failed: %s", error)
            return Outcome(verdict, staged.metadata, attempt, str(error))
        return Outcome(verdict, staged.metadata, attempt)
    if staged is not None:
        store.discard(staged.metadata.version)
    return Outcome(
        Verdict(
            ExitCode.CHAMPION_KEPT_CHANGING,
            f"the current model changed {JUDGE_ATTEMPTS} times while judging; "
            "run again",
        ),
        attempts=JUDGE_ATTEMPTS,
    )


class VersionUnusableError(StoreError):
    """A version named for rollback or promotion is missing or fails verification."""


def verified_pointer(store: ModelStore, version: str) -> Pointer:
    """A pointer to version, after loading and verifying it as a predictor would."""
    if version not in store.list_versions():
        raise VersionUnusableError(f"{store.uri}: no version {version}")
    metadata_bytes = store.read(version_key(version, METADATA_FILE))
    if metadata_bytes is None:
        raise VersionUnusableError(f"{store.uri}: version {version} is incomplete")
    pointer = Pointer(version=version, metadata_sha256=sha256_hex(metadata_bytes))
    try:
        store.load(pointer)
    except IntegrityError as error:
        raise VersionUnusableError(str(error)) from error
    return pointer


def previous_version(store: ModelStore, current: str) -> str:
    """The newest version before current that was ever current and still verifies."""
    history = store.history()
    were_current = {change.version for change in history}
    candidates = [
        version
        for version in store.list_versions()
        if version < current and (not history or version in were_current)
    ]
    for version in reversed(candidates):
        try:
            verified_pointer(store, version)
        except VersionUnusableError as error:
            log.warning("skipped for rollback version=%s error=%s", version, error)
            continue
        return version
    raise VersionUnusableError(f"{store.uri}: no usable version before {current}")


def move_pointer(
    store: ModelStore,
    action: Literal["rollback", "promote"],
    version: str | None,
    reason: str,
    by: str,
) -> tuple[str | None, str]:
    """Make version (default: the previous one) current; return (from, to)."""
    state = store.read_pointer_state()
    if version is None:
        if state.version is None:
            raise VersionUnusableError(f"{store.uri}: nothing is published")
        version = previous_version(store, state.version)
    pointer = verified_pointer(store, version)
    store.swap(pointer, state, action, reason, by)
    return state.version, version
