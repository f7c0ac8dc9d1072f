"""A reader polling the store while versions are published never sees a partial one."""

from __future__ import annotations

import threading

from training.store import open_store
from training.train import TrainedModel

PUBLISHES = 12


def test_a_concurrent_reader_never_sees_a_missing_or_torn_file(
    store_uri: str, trained: TrainedModel
) -> None:
    writer = open_store(store_uri)
    reader = open_store(store_uri)
    published: list[str] = []
    seen: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                loaded = reader.load_current()
            # Any failure at all is what this test looks for.
            except BaseException as error:  # noqa: BLE001
                failures.append(error)
                return
            if loaded is not None:
                seen.append(loaded.metadata.version)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for _ in range(PUBLISHES):
            # keep_versions=2 makes the reader race pruning as well as publishing.
            published.append(
                writer.publish(trained.estimator, trained.card, keep_versions=2).version
            )
    finally:
        done.set()
        thread.join(timeout=60)

    assert failures == []
    assert len(set(seen)) > 1, "the reader should have observed several versions"
    assert set(seen) <= set(published)
    assert seen == sorted(seen), "a reader must never go back to an older version"
    assert writer.list_versions() == published[-2:]
