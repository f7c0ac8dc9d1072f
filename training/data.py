"""The training data: scikit-learn's Iris by default, or a CSV file the user brings.

Either way training sees the same thing: a matrix of finite numbers, class ids
``0..k-1``, and the names and units of the columns and classes; a class id is the
index of its class in ``classes``. Bad data raises ``DataError`` before anything is
trained, so nothing is published.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from training.store.bucket import BucketStore, S3Settings
from training.store.layout import FeatureSchema, FeatureStats, GoldenRows
from training.store.reference import describe_feature

log = logging.getLogger(__name__)

# scikit-learn names the features "sepal length (cm)"; these are the names the
# predictor accepts in a request.
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
# Held-out rows recorded with their probabilities, for the predictor's self-check.
GOLDEN_ROWS = 8


class DataError(Exception):
    """The training data cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Dataset:
    x: NDArray[np.float64]
    y: NDArray[np.int64]
    features: list[str]
    units: list[str | None]
    classes: list[str] | list[int]
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.x.tobytes() + self.y.tobytes()).hexdigest()


@dataclass(frozen=True)
class DataSplit:
    x_train: NDArray[np.float64]
    x_test: NDArray[np.float64]
    y_train: NDArray[np.int64]
    y_test: NDArray[np.int64]
    dataset: Dataset

    @property
    def dataset_sha256(self) -> str:
        return self.dataset.sha256

    def feature_stats(self) -> dict[str, FeatureStats]:
        """Each feature's distribution in the training part."""
        return {
            name: describe_feature(column)
            for name, column in zip(self.dataset.features, self.x_train.T, strict=True)
        }

    def feature_schema(self, margin: float) -> list[FeatureSchema]:
        """Each feature's accepted range: the training range widened by margin of it."""
        schema = []
        for name, unit, column in zip(
            self.dataset.features, self.dataset.units, self.x_train.T, strict=True
        ):
            low, high = float(column.min()), float(column.max())
            # A constant feature has no range to widen by; use its magnitude.
            span = (high - low) or abs(high) or 1.0
            low, high = low - margin * span, high + margin * span
            schema.append(FeatureSchema(name=name, unit=unit, min=low, max=high))
        return schema

    def golden_rows(self, probabilities: NDArray[np.float64]) -> GoldenRows:
        """The first held-out rows and the probabilities given for them."""
        return GoldenRows(
            rows=self.x_test[:GOLDEN_ROWS].tolist(),
            probabilities=probabilities[:GOLDEN_ROWS].tolist(),
        )


def load_iris_dataset() -> Dataset:
    """The Iris data set that scikit-learn ships (no network)."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    x = np.asarray(bunch.data, dtype=np.float64)
    if list(bunch.target_names) != IRIS_CLASSES or x.shape[1] != len(IRIS_FEATURES):
        raise RuntimeError(f"unexpected Iris data set: classes {bunch.target_names}")
    return Dataset(
        x=x,
        y=np.asarray(bunch.target, dtype=np.int64),
        features=list(IRIS_FEATURES),
        units=["cm"] * len(IRIS_FEATURES),
        classes=list(IRIS_CLASSES),
        source="scikit-learn's Iris",
    )


def read_source(uri: str) -> bytes:
    """The bytes of a local file or an ``s3://bucket/key`` object."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc or not key:
            raise DataError(f"{uri}: an s3:// data URI is s3://bucket/path/file.csv")
        data = BucketStore(parts.netloc, "", S3Settings()).read(key)
        if data is None:
            raise DataError(f"{uri}: no such object")
        return data
    try:
        return Path(uri).read_bytes()
    except OSError as error:
        raise DataError(f"{uri}: cannot read: {error.strerror or error}") from error


def parse_csv(
    data: bytes, target: str, source: str, max_rows: int, max_columns: int
) -> Dataset:
    """A CSV with a header row: the target column holds the classes, others features."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not UTF-8 text: {error}") from error
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    if not any(header):
        raise DataError(f"{source} is empty: it needs a header row and data rows")
    if len(header) > max_columns:
        raise DataError(
            f"{source} has {len(header)} columns, more than the limit of {max_columns}"
        )
    if target not in header:
        raise DataError(
            f'{source} has no target column "{target}": its columns are '
            f"{', '.join(header)}"
        )
    if "" in header or len(set(header)) != len(header):
        raise DataError(f"{source}: every column needs a distinct, non-empty name")
    if len(header) < 2:
        raise DataError(f"{source} has no feature columns beside {target}")
    target_column = header.index(target)
    features = [name for name in header if name != target]
    values: list[list[float]] = []
    labels: list[str] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(values) == max_rows:
            raise DataError(f"{source} has more rows than the limit of {max_rows}")
        if len(row) != len(header):
            raise DataError(
                f"{source} line {line} has {len(row)} fields, the header {len(header)}"
            )
        label = row[target_column].strip()
        if not label:
            raise DataError(f'{source} line {line} has no value for "{target}"')
        labels.append(label)
        values.append(
            [
                _number(source, line, name, cell)
                for name, cell in zip(header, row, strict=True)
                if name != target
            ]
        )
    if not values:
        raise DataError(f"{source} has a header but no data rows")
    classes: list[str] | list[int] = sorted(set(labels))
    if all(_is_integer(label) for label in labels):
        classes = sorted({int(label) for label in labels})
        labels = [str(int(label)) for label in labels]
    if len(classes) < 2:
        raise DataError(
            f'{source}: "{target}" has a single class ({classes[0]}); '
            "a classifier needs at least two"
        )
    class_ids = {str(name): index for index, name in enumerate(classes)}
    return Dataset(
        x=np.array(values, dtype=np.float64),
        y=np.array([class_ids[label] for label in labels], dtype=np.int64),
        features=features,
        units=[None] * len(features),
        classes=classes,
        source=source,
    )


def _number(source: str, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        shown = f'"{cell}"' if cell.strip() else "empty"
        raise DataError(
            f'{source} line {line} column "{column}" is {shown}: features must be '
            "numbers"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f'{source} line {line} column "{column}" is {cell.strip()}: features must '
            "be finite numbers (missing values are not supported)"
        )
    return value


def _is_integer(label: str) -> bool:
    try:
        int(label)
    except ValueError:
        return False
    return True


def load_dataset(data: str, target: str, max_rows: int, max_columns: int) -> Dataset:
    """Iris when data is empty, else the CSV at data with its target column."""
    if not data:
        return load_iris_dataset()
    if not target:
        raise DataError(f"{data}: --target names the column that holds the classes")
    dataset = parse_csv(read_source(data), target, data, max_rows, max_columns)
    log.info(
        "read csv source=%s rows=%d features=%d classes=%d",
        data,
        len(dataset.y),
        len(dataset.features),
        len(dataset.classes),
    )
    return dataset


def split_dataset(
    dataset: Dataset, test_fraction: float, random_state: int, cv_folds: int
) -> DataSplit:
    """Hold out a stratified test_fraction; every class must have enough rows."""
    from sklearn.model_selection import train_test_split

    try:
        x_train, x_test, y_train, y_test = train_test_split(
            dataset.x,
            dataset.y,
            test_size=test_fraction,
            stratify=dataset.y,
            random_state=random_state,
        )
    except ValueError as error:
        raise DataError(
            f"{dataset.source}: cannot hold out a test set: {error}"
        ) from error
    counts = np.bincount(y_train, minlength=len(dataset.classes))
    fewest = int(counts.argmin())
    if counts[fewest] < cv_folds:
        raise DataError(
            f'{dataset.source}: class "{dataset.classes[fewest]}" has '
            f"{counts[fewest]} training rows, fewer than the {cv_folds} "
            "cross-validation folds"
        )
    return DataSplit(x_train, x_test, y_train, y_test, dataset)


def load_split(test_fraction: float, random_state: int, cv_folds: int = 5) -> DataSplit:
    """Iris, split as training splits it by default."""
    return split_dataset(load_iris_dataset(), test_fraction, random_state, cv_folds)
