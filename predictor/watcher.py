"""Watching the store and swapping in each newly published version.

The pointer is polled cheaply (a stat or an ETag); only when it changes is the new
version loaded, verified and prepared, in a worker thread, and then swapped in. A
version that fails is logged and counted, and the model already serving stays.

Whatever goes wrong with the store (unreachable, permissions, a symlink loop, the
served version or the whole store deleted) is one log line and one count of
``iris_model_reloads_total{result="failure"}`` per poll, and the next poll tries
again: the watcher itself never stops.
"""

from __future__ import annotations

import asyncio
import logging

from predictor.metrics import MODEL_RELOADS
from predictor.model import IrisModel
from predictor.serving import Evaluator, ModelRejected, prepare
from training.store import IntegrityError, ModelStore, StoreError
from training.store.layout import (
    GRID_FILE,
    METADATA_FILE,
    POINTER_NAME,
    version_key,
)

log = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(
        self,
        store: ModelStore,
        model: IrisModel,
        interval_seconds: float,
        evaluator: Evaluator = "grid",
    ) -> None:
        self.store = store
        self.model = model
        self.interval_seconds = interval_seconds
        self.evaluator: Evaluator = evaluator
        self._seen_tag: str | None = None

    def check(self) -> None:
        """Load the current version if the pointer changed since the last check.

        Never raises: every failure is logged and counted, and retried at the next
        check unless the pointer names a version known to be broken.
        """
        try:
            self._check()
        except StoreError as error:
            self._failed(str(error))
        # Any error at all, or hot reload would end with the task that ran it.
        except Exception as error:  # noqa: BLE001
            self._failed(f"{self.store.uri}: {type(error).__name__}: {error}")

    def _check(self) -> None:
        tag = self.store.pointer_tag()
        if tag is None:
            if self._seen_tag is not None or self.model.serving is not None:
                self._failed(f"{self.store.locate(POINTER_NAME)}: missing")
            return
        if tag == self._seen_tag:
            self._check_served_version()
            return
        try:
            published = self.store.load_current(prefer_grid=self.evaluator == "grid")
        except IntegrityError as error:
            # This pointer names a broken version: wait for the next one.
            self._seen_tag = tag
            self._failed(str(error))
            return
        if published is None:
            return
        try:
            serving = prepare(published, self.evaluator)
        except ModelRejected as error:
            self._seen_tag = tag
            loaded = GRID_FILE if published.grid else published.metadata.model_file
            model_key = version_key(published.metadata.version, loaded)
            self._failed(f"{self.store.locate(model_key)}: rejected: {error}")
            return
        self._seen_tag = tag
        if self.model.serving and self.model.serving.version == serving.version:
            return
        self.model.serve(serving)
        MODEL_RELOADS.labels(self.model.name, "success").inc()

    def _check_served_version(self) -> None:
        """The pointer is unchanged: the version it names must still be stored."""
        serving = self.model.serving
        if serving is None:
            return
        key = version_key(serving.version, METADATA_FILE)
        if not self.store.exists(key):
            self._failed(f"{self.store.locate(key)}: missing")

    def _failed(self, reason: str) -> None:
        MODEL_RELOADS.labels(self.model.name, "failure").inc()
        serving = self.model.serving
        log.error(
            "model load failed, %s reason=%s",
            f"still serving version={serving.version}" if serving else "not ready",
            reason,
        )

    async def run(self) -> None:
        """Check now, then every interval, until cancelled."""
        while True:
            await asyncio.to_thread(self.check)
            await asyncio.sleep(self.interval_seconds)
