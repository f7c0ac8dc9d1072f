"""The baseline: a plain ``kserve.Model`` calling scikit-learn, as KServe's
sklearnserver does, serving the same published model as the predictor.

``python -m bench.baseline --model_uri DIR --http_port PORT``. Logging is quiet,
as it is for the predictor under benchmark.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from kserve import Model, ModelServer, model_server
from kserve.utils.utils import get_predict_input, get_predict_response

from training.store import open_store


class SklearnModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, estimator: Any) -> None:
        super().__init__(name)
        self.estimator = estimator
        self.ready = True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        # Exactly what kserve/python/sklearnserver does, v1 and v2 alike.
        instances = get_predict_input(payload)
        return get_predict_response(
            payload, self.estimator.predict(instances), self.name
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_uri", required=True)
    args, _ = parser.parse_known_args()
    published = open_store(args.model_uri).load_current()
    if published is None:
        raise SystemExit(f"no model published at {args.model_uri}")
    logging.basicConfig(level=logging.WARNING)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ModelServer(
        http_port=args.http_port, enable_grpc=False, enable_latency_logging=False
    ).start([SklearnModel("iris", published.estimator)])


if __name__ == "__main__":
    main()
