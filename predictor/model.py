"""The published model as KServe serves it: a ``kserve.Model`` for v1 and v2.

The model being served can change while the server runs (``serve`` swaps in a newer
version, whose schema may differ); each request reads ``self.serving`` once, in
``preprocess``, so it is validated and answered by one version from start to end.
"""

from __future__ import annotations

import gc
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictor.drift import DriftReference, drift_window
from predictor.inputs import V1Request, V2Request, parse_v1, parse_v2
from predictor.metrics import (
    MODEL_FEATURE_MEAN,
    MODEL_INFO,
    MODEL_READY,
    MODEL_RELOADS,
    MODEL_TRAINED,
    prediction_stats,
)
from predictor.serving import Prediction, ServingModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidRequest:
    """A request checked against the schema of the version that will answer it."""

    serving: ServingModel
    request: V1Request | V2Request


# The one reason every protocol gives while no verified model is served.
NOT_LOADED = "No model has been loaded yet."


class IrisModel(Model):
    def __init__(self, name: str, max_rows: int, drift_window_rows: int = 1000) -> None:
        super().__init__(name)
        self.max_rows = max_rows
        self.serving: ServingModel | None = None
        self.stats = prediction_stats(name)
        self.drift = drift_window(name, drift_window_rows)
        MODEL_READY.labels(name).set(0)
        # Both results exist from the start, so increase() sees the first failure.
        for result in ("success", "failure"):
            MODEL_RELOADS.labels(name, result)

    def serve(self, serving: ServingModel) -> None:
        """Answer with this model from now on; requests under way finish on the old."""
        previous = self.serving
        self.serving = serving
        self.ready = True
        metadata = serving.metadata
        MODEL_INFO.labels(self.name).info(
            {
                "version": metadata.version,
                "algorithm": metadata.algorithm,
                "evaluator": serving.evaluator,
            }
        )
        MODEL_TRAINED.labels(self.name).set(metadata.created_at.timestamp())
        # Only the model's own features, and none of the previous version's left over.
        for feature in metadata.feature_names:
            MODEL_FEATURE_MEAN.labels(self.name, feature).set(
                metadata.feature_stats[feature].mean
            )
        stale = set(previous.metadata.feature_names) if previous else set()
        for feature in stale - set(metadata.feature_names):
            MODEL_FEATURE_MEAN.remove(self.name, feature)
        self.stats.follow(metadata)
        self.drift.use(DriftReference.of(metadata))
        MODEL_READY.labels(self.name).set(1)
        # The new model's objects live as long as it serves: keep them out of the
        # cyclic collector's way, which otherwise walks them on every full collection.
        gc.freeze()
        log.info(
            "serving model=%s version=%s evaluator=%s previous=%s",
            self.name,
            serving.version,
            serving.evaluator,
            previous.version if previous else None,
        )

    def load(self) -> bool:
        # KServe calls load() to (re)load a model that is not ready; loading is the
        # watcher's job, which does it in the background as versions appear.
        return self.ready

    def stop(self) -> None:
        self.ready = False
        MODEL_READY.labels(self.name).set(0)

    def not_ready(self) -> ModelNotReady:
        return ModelNotReady(self.name, NOT_LOADED)

    def _current(self) -> ServingModel:
        serving = self.serving
        if serving is None:
            raise self.not_ready()
        return serving

    # preprocess, predict and postprocess are plain functions: Model.__call__ calls
    # them directly, where a coroutine would be created and awaited for each.

    def preprocess(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
    ) -> ValidRequest:
        serving = self._current()
        if isinstance(payload, InferRequest):
            return ValidRequest(
                serving, parse_v2(payload, serving.schema, self.max_rows)
            )
        return ValidRequest(serving, parse_v1(payload, serving.schema, self.max_rows))

    def validate(self, payload: Any) -> Any:
        # KServe's validate checks a dict body's shape; preprocess has already
        # checked the request against the served schema and made a ValidRequest.
        return payload

    def predict(
        self, payload: ValidRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        if not isinstance(payload, ValidRequest):
            raise InvalidInput("the request could not be read")
        serving, request = payload.serving, payload.request
        prediction = serving.predict(request.rows)
        self.stats.record(request.rows, prediction.labels, prediction.confidence)
        self.drift.record(request.rows, prediction.labels)
        if isinstance(request, V2Request):
            return self._v2_response(request, prediction, serving.version)
        if request.probabilities:
            return {"predictions": _detailed(prediction, serving.metadata.classes)}
        return {"predictions": prediction.labels.tolist()}

    def _v2_response(
        self, request: V2Request, prediction: Prediction, version: str
    ) -> InferResponse:
        tensors = {
            "predict": InferOutput(
                "predict",
                list(prediction.labels.shape),
                "INT64",
                prediction.labels.tolist(),
            ),
            "probabilities": InferOutput(
                "probabilities",
                list(prediction.probabilities.shape),
                "FP64",
                prediction.probabilities.ravel().tolist(),
            ),
        }
        return InferResponse(
            response_id=request.request_id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=version,
            infer_outputs=[tensors[name] for name in request.outputs],
        )

    def postprocess(
        self,
        result: dict[str, Any] | InferResponse,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        return result

    def get_input_types(self) -> list[dict[str, Any]]:
        features = len(self._current().metadata.features)
        return [{"name": "input-0", "datatype": "FP32", "shape": [-1, features]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = len(self._current().metadata.classes)
        return [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, classes]},
        ]

    def describe(self) -> dict[str, Any]:
        """What the model being served is: its metadata, as published."""
        serving = self._current()
        return {
            "name": self.name,
            "ready": self.ready,
            **serving.metadata.model_dump(mode="json"),
        }


def _detailed(
    prediction: Prediction, classes: list[str] | list[int]
) -> list[dict[str, Any]]:
    """Per row: the class id and its class, its probability, and every class's.

    JSON object keys are strings, so integer classes key "probabilities" as such.
    """
    keys = [str(name) for name in classes]
    return [
        {
            "class_id": label,
            "label": classes[label],
            "confidence": max(probabilities),
            "probabilities": dict(zip(keys, probabilities, strict=True)),
        }
        for label, probabilities in zip(
            prediction.labels.tolist(), prediction.probabilities.tolist(), strict=True
        )
    ]
