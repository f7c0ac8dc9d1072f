"""A few rows are checked in plain Python, many with NumPy: both must agree exactly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from kserve.errors import InvalidInput

from predictor.inputs import RequestSchema, parse_v1
from tests.unit.test_drift import metadata
from training.train import TrainedModel

MAX_ROWS = 100
# More rows than inputs.py checks in plain Python: these take the NumPy path.
MANY = 9


@pytest.fixture(scope="module")
def schema(trained: TrainedModel) -> RequestSchema:
    return RequestSchema.of(metadata(trained))


def variants(schema: RequestSchema) -> dict[str, Any]:
    """Rows, good and bad, in every shape a v1 request can hold one."""
    lows, highs = schema.minimums.tolist(), schema.maximums.tolist()
    low, high = lows[0], highs[0]
    middle = [(a + b) / 2 for a, b in zip(lows, highs, strict=True)]
    rest = middle[1:]
    # True, 1 and "1" would be in this feature's range, were they numbers.
    one = next(f for f, (a, b) in enumerate(zip(lows, highs, strict=True)) if a < 1 < b)

    def with_value(value: object) -> list[object]:
        return [*middle[:one], value, *middle[one + 1 :]]

    return {
        "floats": middle,
        "integers": [math.ceil(value) for value in middle],
        "an integer inside": with_value(1),
        "at the minimum": [low, *rest],
        "at the maximum": [high, *rest],
        "just below the minimum": [math.nextafter(low, -math.inf), *rest],
        "just above the maximum": [math.nextafter(high, math.inf), *rest],
        "a huge integer": [2**63, *rest],
        "a boolean": with_value(True),
        "a string": with_value("1"),
        "null": with_value(None),
        "nested": with_value([1.0]),
        "too short": rest,
        "too long": [*middle, low],
        "named": dict(zip(schema.features, middle, strict=True)),
        "named, out of range": dict(zip(schema.features, [-1e300, *rest], strict=True)),
        "a number": low,
    }


def outcome(instances: list[Any], schema: RequestSchema) -> object:
    """The first row as parsed, bit for bit, or the whole error message."""
    try:
        rows = parse_v1({"instances": instances}, schema, MAX_ROWS).rows
    except InvalidInput as error:
        return str(error)
    assert rows.dtype == np.float64
    return rows[0].tobytes()


def test_a_few_rows_are_checked_as_many_rows_are(schema: RequestSchema) -> None:
    good = variants(schema)["floats"]
    seen = set()
    for name, row in variants(schema).items():
        one = outcome([row], schema)
        few = outcome([row, good], schema)
        many = outcome([row, *[good] * (MANY - 1)], schema)
        assert one == few == many, name
        seen.add(type(one))
    # Both kinds of outcome were compared.
    assert seen == {bytes, str}
