"""Watching the store and swapping in each newly published version.

The pointer is polled cheaply (a stat or an ETag); only when it changes is the new
version loaded, verified and prepared, in a worker thread, and then swapped in. A
version that fails is logged and counted, and the model already serving stays.
"""

from __future__ import annotations

import asyncio
import logging

from predictor.metrics import MODEL_RELOADS
from predictor.model import IrisModel
from predictor.serving import Evaluator, ModelRejected, prepare
from training.store import IntegrityError, ModelStore, StoreError
from training.store.layout import GRID_FILE, version_key

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
        """Load the current version if the pointer changed since the last check."""
        try:
            tag = self.store.pointer_tag()
        except StoreError as error:
            log.warning("store unreachable uri=%s error=%s", self.store.uri, error)
            return
        if tag is None or tag == self._seen_tag:
            return
        try:
            published = self.store.load_current(prefer_grid=self.evaluator == "grid")
        except IntegrityError as error:
            # This pointer names a broken version: wait for the next one.
            self._seen_tag = tag
            self._failed(str(error))
            return
        except StoreError as error:
            # Possibly transient (network, permissions): try again at the next poll.
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
