"""Any tabular classifier from one code path: CSV data sets the tests generate are
trained by ``python -m training --data``, published, and served over v1 and v2."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import JSON, PredictorProcess
from training.store import ModelMetadata, open_store


@dataclass(frozen=True)
class Generated:
    """A CSV data set, the model trained on it, and a predictor serving that."""

    rows: list[list[float]]
    labels: list[str]
    metadata: ModelMetadata
    server: PredictorProcess


def write_csv(
    path: Path, features: int, classes: list[str], seed: int
) -> tuple[list[list[float]], list[str]]:
    """Well-separated clusters, one per class, 60 rows each, target column first."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(len(classes), features))
    rows, labels = [], []
    for centre, label in zip(centres, classes, strict=True):
        for point in centre + rng.normal(0, 1, size=(60, features)):
            rows.append(np.round(point, 3).tolist())
            labels.append(label)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["kind", *(f"x{i}" for i in range(features))])
        writer.writerows([label, *row] for label, row in zip(labels, rows, strict=True))
    return rows, labels


def train_and_serve(
    tmp: Path, features: int, classes: list[str], seed: int
) -> Generated:
    data = tmp / "data.csv"
    rows, labels = write_csv(data, features, classes, seed)
    models = tmp / "models"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "--data",
            str(data),
            "--target",
            "kind",
            "--model_uri",
            str(models),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    current = open_store(str(models)).load_current()
    assert current is not None
    server = PredictorProcess(tmp / "predictor.log", "--model_uri", str(models))
    server.wait_until("/v1/models/iris", 200)
    return Generated(rows, labels, current.metadata, server)


# Each: features, classes, seed. wide: 13 features, 3 string classes, so the grid
# would be too large; narrow: 2 features, 4 classes, so the grid serves.
DATA_SETS = {
    "wide": (13, ["alpha", "beta", "gamma"], 1),
    "narrow": (2, ["n", "e", "s", "w"], 2),
}


@pytest.fixture(scope="module")
def generated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Generated]]:
    """Every data set trained and served side by side: each step waits on processes."""
    directories = {name: tmp_path_factory.mktemp(name) for name in DATA_SETS}
    with ThreadPoolExecutor(len(DATA_SETS)) as pool:
        futures = {
            name: pool.submit(train_and_serve, directories[name], *spec)
            for name, spec in DATA_SETS.items()
        }
    started = {name: f.result() for name, f in futures.items() if not f.exception()}
    try:
        for future in futures.values():
            future.result()  # a failed one raises here, once the others are kept
        yield started
    finally:
        for served in started.values():
            served.server.stop()


@pytest.mark.parametrize(
    ("name", "evaluator", "features", "classes"),
    [
        ("wide", "sklearn", 13, ["alpha", "beta", "gamma"]),
        ("narrow", "grid", 2, ["e", "n", "s", "w"]),
    ],
)
def test_a_csv_data_set_is_trained_published_and_served(
    generated: dict[str, Generated],
    name: str,
    evaluator: str,
    features: int,
    classes: list[str],
) -> None:
    served = generated[name]
    server, metadata = served.server, served.metadata
    names = [f"x{i}" for i in range(features)]

    assert [feature.name for feature in metadata.features] == names
    assert metadata.classes == classes
    assert (metadata.serving_artifact is None) == (evaluator == "sklearn")
    assert (
        server.metric(
            "iris_model_info",
            model_name="iris",
            version=metadata.version,
            algorithm="random_forest",
            evaluator=evaluator,
        )
        == 1
    )
    # One row of each class, as the CSV has them: 60 rows per class.
    picks = [0, 60, 120]
    rows = [served.rows[i] for i in picks]
    expected = [classes.index(served.labels[i]) for i in picks]

    named = [dict(zip(names, row, strict=True)) for row in rows]
    assert server.predict(named) == (200, {"predictions": expected})

    status, body = server.request(
        "POST",
        "/v1/models/iris:predict",
        {"instances": rows, "parameters": {"probabilities": True}},
        JSON,
    )
    assert status == 200
    for answer, class_id in zip(body["predictions"], expected, strict=True):
        assert answer["class_id"] == class_id
        assert answer["label"] == classes[class_id]
        assert list(answer["probabilities"]) == classes
        assert answer["confidence"] == answer["probabilities"][classes[class_id]]

    status, body = server.request(
        "POST",
        "/v2/models/iris/infer",
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(rows), features],
                    "datatype": "FP64",
                    "data": rows,
                }
            ],
            "outputs": [{"name": "predict"}, {"name": "probabilities"}],
        },
        JSON,
    )
    assert status == 200
    predict, probabilities = body["outputs"]
    assert predict["data"] == expected
    assert probabilities["shape"] == [len(rows), len(classes)]

    status, body = server.request("GET", "/v2/models/iris")
    assert status == 200
    assert body["inputs"][0]["shape"] == [-1, features]
    assert body["outputs"][1]["shape"] == [-1, len(classes)]

    assert server.predict([rows[0][:-1]]) == (
        400,
        {
            "error": f"instances[0] has {features - 1} values, expected {features}: "
            + ", ".join(names)
        },
    )
    last = metadata.features[-1]
    assert server.predict([[*rows[0][:-1], last.max + 1]]) == (
        400,
        {
            "error": f"instances[0][{features - 1}] = {last.max + 1:g} is outside "
            f"{last.name}'s accepted range {last.min:g} to {last.max:g}"
        },
    )
    assert (
        server.metric(
            "iris_predictions_total", model_name="iris", **{"class": served.labels[0]}
        )
        >= 1
    )
    # What the process has mapped: scikit-learn's and skops' code only if it serves.
    assert bool(heavy_libraries(server)) == (evaluator == "sklearn")


def heavy_libraries(server: PredictorProcess) -> list[str]:
    """Files of scikit-learn, skops or SciPy mapped into the server's memory."""
    return sorted(
        path
        for path in server.mapped_files()
        if any(f"/{package}/" in path for package in ("sklearn", "skops", "scipy"))
    )


def test_the_default_iris_predictor_never_loads_scikit_learn(
    predictor: PredictorProcess,
) -> None:
    assert predictor.predict([[6.8, 2.8, 4.8, 1.4]]) == (200, {"predictions": [1]})
    assert heavy_libraries(predictor) == []
