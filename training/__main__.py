"""``python -m training``: the program the training Job runs.

Train, evaluate, pass the quality gate, publish, report. The exit status says
which of those happened (see ``training.gate.ExitCode``). ``versions``,
``rollback`` and ``promote`` list the store's versions and move its pointer.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Callable, Sequence

from training.data import DataError
from training.gate import ExitCode
from training.lifecycle import VersionUnusableError, move_pointer, publish_if_better
from training.report import render_report
from training.settings import (
    StoreCommandSettings,
    TrackedSettings,
    TrainingSettings,
    parse_settings,
)
from training.store import ModelStore, StoreError, open_store
from training.store.cli import parse_cli
from training.store.errors import PointerConflictError
from training.store.layout import METADATA_FILE, ModelMetadata, version_key
from training.tracking import Tracker, TrackingUnavailableError
from training.train import train

log = logging.getLogger("training")

COMMANDS = ("versions", "rollback", "promote")


def run(settings: TrainingSettings, tracker: Tracker | None = None) -> ExitCode:
    store = open_store(settings.model_uri)
    trained = train(settings)
    # A pod's host name is its name, which the history records as who published.
    outcome = publish_if_better(store, trained, settings, socket.gethostname())
    if tracker is not None:
        tracker.record_training(trained, outcome, settings.mlflow_experiment)
    verdict = outcome.verdict
    location = store.uri
    if outcome.published is not None:
        location = f"{store.uri} as version {outcome.published.version}"
    else:
        log.error(
            "refused to publish exit_code=%d reason=%s",
            verdict.exit_code,
            verdict.reason,
        )
    print(
        render_report(
            trained.card.metrics,
            trained.card.class_names,
            verdict,
            location,
            trained.split.dataset,
        )
    )
    return verdict.exit_code


def list_versions(store: ModelStore) -> list[dict[str, object]]:
    """Each version, oldest first, with what it is and whether it is current."""
    pointer = store.read_pointer()
    current = pointer.version if pointer else None
    rows: list[dict[str, object]] = []
    for version in store.list_versions():
        data = store.read(version_key(version, METADATA_FILE))
        metadata = None
        if data is not None:
            try:
                metadata = ModelMetadata.model_validate_json(data)
            except ValueError as error:
                log.warning("unreadable metadata version=%s error=%s", version, error)
        rows.append(
            {
                "version": version,
                "current": version == current,
                "complete": metadata is not None,
                "created_at": metadata.created_at.isoformat() if metadata else None,
                "algorithm": metadata.algorithm if metadata else None,
                "accuracy": metadata.metrics.accuracy if metadata else None,
                "evaluation_sha256": metadata.evaluation_sha256 if metadata else None,
            }
        )
    return rows


def render_versions(rows: list[dict[str, object]]) -> str:
    lines = [
        f"  {'version':<29} {'created':<19} {'algorithm':<14} accuracy  evaluation"
    ]
    for row in rows:
        mark = "*" if row["current"] else " "
        accuracy = row["accuracy"]
        evaluation = row["evaluation_sha256"]
        lines.append(
            f"{mark} {row['version']:<29} {str(row['created_at'] or '-')[:19]:<19} "
            f"{row['algorithm'] or 'incomplete':<14} "
            f"{f'{accuracy:.4f}' if isinstance(accuracy, float) else '-':<8}  "
            f"{str(evaluation)[:12] if evaluation else '-'}"
        )
    return "\n".join(lines)


def parse_command(
    command: str, argv: Sequence[str]
) -> tuple[StoreCommandSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog=f"python -m training {command}",
        description={
            "versions": "List the published versions and the pointer's history.",
            "rollback": "Make the previous (or a named) verified version current.",
            "promote": "Make a named, verified version current.",
        }[command],
    )
    if command == "rollback":
        parser.add_argument("--to", metavar="VERSION", help="the version to restore")
    if command == "promote":
        parser.add_argument("target", metavar="VERSION", help="the version to promote")
    if command == "versions":
        parser.add_argument("--json", action="store_true", help="print JSON")
    return parse_cli(StoreCommandSettings, parser, argv)


def run_command(
    command: str,
    settings: StoreCommandSettings,
    arguments: argparse.Namespace,
    tracker: Tracker | None,
) -> ExitCode:
    try:
        store = open_store(settings.model_uri)
        if command == "versions":
            rows = list_versions(store)
            history = [change.model_dump(mode="json") for change in store.history()]
            if arguments.json:
                print(json.dumps({"versions": rows, "history": history}, indent=2))
            else:
                print(render_versions(rows))
            return ExitCode.PUBLISHED
        target = arguments.to if command == "rollback" else arguments.target
        before, after = move_pointer(
            store,
            "rollback" if command == "rollback" else "promote",
            target,
            settings.reason,
            socket.gethostname(),
        )
    except VersionUnusableError as error:
        log.error("nothing changed: %s", error)
        return ExitCode.VERSION_UNUSABLE
    except PointerConflictError as error:
        log.error("nothing changed, another writer moved the pointer: %s", error)
        return ExitCode.CHAMPION_KEPT_CHANGING
    except StoreError as error:
        log.error("store error: %s", error)
        return ExitCode.STORE_ERROR
    log.info("%s from=%s to=%s uri=%s", command, before, after, store.uri)
    if tracker is not None:
        tracker.move_champion(after)
    print(f"{command}: {store.uri} now serves {after} (was {before})")
    return ExitCode.PUBLISHED


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


def start(settings: TrackedSettings, command: Callable[[Tracker | None], int]) -> int:
    """Configure logging, open the one tracker, run command, map errors to codes."""
    _configure_logging(settings.log_level)
    try:
        tracker = (
            Tracker(settings.mlflow_tracking_uri, settings.mlflow_model_name)
            if settings.mlflow_tracking_uri
            else None
        )
    except TrackingUnavailableError as error:
        log.error("%s", error)
        return ExitCode.USAGE
    try:
        return command(tracker)
    except DataError as error:
        log.error("bad training data, nothing published: %s", error)
        return ExitCode.USAGE
    except StoreError as error:
        log.error("store error: %s", error)
        return ExitCode.STORE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in COMMANDS:
        name = arguments[0]
        store_settings, parsed = parse_command(name, arguments[1:])
        return start(
            store_settings,
            lambda tracker: run_command(name, store_settings, parsed, tracker),
        )
    settings = parse_settings(arguments)
    return start(settings, lambda tracker: run(settings, tracker))


if __name__ == "__main__":
    sys.exit(main())
