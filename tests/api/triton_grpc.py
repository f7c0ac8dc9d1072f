"""Triton's gRPC client, run as a process of its own, printing its answers as JSON:
``python -m tests.api.triton_grpc ADDRESS [--describe] [--infer FP32|FP64]...``.

Its protobuf module and KServe's both define the ``inference`` package's messages, and
one Python process cannot load the two into protobuf's default descriptor pool.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.5, 2.8, 4.6, 1.5], [7.6, 3.0, 6.6, 2.2]]


def talk(address: str, describe: bool, datatypes: list[str]) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    answers: dict[str, Any] = {}
    with triton.InferenceServerClient(url=address) as client:
        if describe:
            answers["live"] = client.is_server_live()
            answers["ready"] = client.is_server_ready()
            answers["model_ready"] = client.is_model_ready("iris")
            answers["metadata"] = client.get_model_metadata("iris", as_json=True)
            try:
                client.is_model_ready("setosa")
            except InferenceServerException as error:
                answers["unknown_model"] = error.status()
        for datatype in datatypes:
            tensor = triton.InferInput("input-0", [len(ROWS), 4], datatype)
            # Triton's default: the values travel as raw_input_contents.
            tensor.set_data_from_numpy(
                np.array(ROWS, dtype=np.float32 if datatype == "FP32" else np.float64)
            )
            result = client.infer(
                "iris",
                [tensor],
                outputs=[
                    triton.InferRequestedOutput("predict"),
                    triton.InferRequestedOutput("probabilities"),
                ],
            )
            answers[datatype] = {
                "predict": result.as_numpy("predict").tolist(),
                "probabilities": result.as_numpy("probabilities").tolist(),
                "model_version": result.get_response().model_version,
            }
    return answers


def run(address: str, *args: str) -> dict[str, Any]:
    """Run this module against address; what it was answered."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.api.triton_grpc", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers: dict[str, Any] = json.loads(done.stdout)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--describe", action="store_true")
    parser.add_argument("--infer", action="append", default=[])
    arguments = parser.parse_args()
    json.dump(talk(arguments.address, arguments.describe, arguments.infer), sys.stdout)


if __name__ == "__main__":
    main()
