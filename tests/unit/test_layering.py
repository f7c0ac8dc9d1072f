"""The predictor imports the artifact contract and nothing else of training, and the
contract imports neither scikit-learn nor skops until a model file is read. Neither
imports MLflow's client, which the image carries for training alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sklearn", "skops", "scipy", "mlflow")


def imported_by(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after running statement."""
    script = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


def top(module: str) -> str:
    return module.partition(".")[0]


@pytest.mark.parametrize(
    "statement",
    ["import predictor.__main__", "import training.store, training.store.grid"],
)
def test_serving_code_pulls_in_no_scikit_learn_and_no_training_program(
    statement: str,
) -> None:
    modules = imported_by(statement)

    assert [m for m in modules if top(m) in HEAVY] == []
    training = [m for m in modules if top(m) == "training"]
    assert training, "the contract was not imported at all"
    # The package itself (a docstring) is imported on the way to training.store.
    assert [m for m in training if m.partition(".store")[0] != "training"] == []


def test_reading_a_model_file_is_what_imports_skops() -> None:
    modules = imported_by(
        "from training.store.model_file import load_model\n"
        "try:\n    load_model(b'', source='x')\nexcept Exception:\n    pass"
    )

    assert "skops.io" in modules
