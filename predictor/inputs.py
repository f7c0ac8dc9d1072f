"""Request bodies made into a matrix of measurements, or a 400 naming the problem.

Every check a request can fail is here, before the model sees it; whatever passes is
an (N, features) float64 array of finite values, each in its feature's accepted
range. The features, their order, units and ranges are the served model's schema,
as its published metadata gives them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from operator import le
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest
from numpy.typing import NDArray

from training.store import ModelMetadata

V1_FIELDS = {"instances", "parameters"}
V1_PARAMETERS = {"probabilities"}
# Up to this many rows, rows are checked in plain Python.
_FEW_ROWS = 8
# The exact types of a JSON number as orjson and json decode it (bool is not one).
_NUMBER_TYPES = frozenset({float, int})
V2_OUTPUTS = ("predict", "probabilities")
V2_DATATYPES = {"FP32": np.float32, "FP64": np.float64}


@dataclass(frozen=True)
class RequestSchema:
    """What a request to one model version must look like, from its metadata."""

    features: tuple[str, ...]
    units: tuple[str | None, ...]
    minimums: NDArray[np.float64]
    maximums: NDArray[np.float64]
    # The same bounds as floats, for a few rows in plain Python: comparing four
    # floats costs far less than the NumPy calls of comparing a matrix.
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    # Where a message needs the names: "sepal_length, sepal_width, ...".
    listing: str
    # A valid request body, for messages: the first golden row.
    example: str

    @classmethod
    def of(cls, metadata: ModelMetadata) -> RequestSchema:
        features = metadata.features
        return cls(
            features=tuple(feature.name for feature in features),
            units=tuple(feature.unit for feature in features),
            minimums=np.array([feature.min for feature in features]),
            maximums=np.array([feature.max for feature in features]),
            lows=tuple(float(feature.min) for feature in features),
            highs=tuple(float(feature.max) for feature in features),
            listing=", ".join(feature.name for feature in features),
            example=orjson.dumps({"instances": metadata.golden.rows[:1]}).decode(),
        )

    @property
    def width(self) -> int:
        return len(self.features)

    def inside(self, row: Sequence[float]) -> bool:
        """Whether each value of a row of width numbers is inside its feature's range.

        False for NaN, which fails every comparison. Python compares an int and a
        float exactly, so an int inside is inside as a float64 too.
        """
        return all(map(le, self.lows, row)) and all(map(le, row, self.highs))


@dataclass(frozen=True, slots=True)
class V1Request:
    rows: NDArray[np.float64]
    probabilities: bool


@dataclass(frozen=True, slots=True)
class V2Request:
    rows: NDArray[np.float64]
    outputs: tuple[str, ...]
    request_id: str | None


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """KServe's decoders fail with KeyError and the like on what a client sent: 400."""
    try:
        yield
    except InvalidInput:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise InvalidInput(
            f"malformed {what}: {type(error).__name__}: {error}"
        ) from error


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_v1(payload: object, schema: RequestSchema, max_rows: int) -> V1Request:
    """Validate a v1 body: ``{"instances": [...], "parameters": {...}}``."""
    if not isinstance(payload, dict):
        raise InvalidInput(
            f"the body must be a JSON object such as {schema.example}, "
            f"got {json_type(payload)}"
        )
    if "instances" not in payload:
        raise InvalidInput(f'missing "instances": send rows such as {schema.example}')
    if not payload.keys() <= V1_FIELDS:
        unknown = payload.keys() - V1_FIELDS
        raise InvalidInput(
            f'unknown field "{sorted(unknown)[0]}": a v1 request has "instances" and '
            f'optionally "parameters"'
        )
    return V1Request(
        rows=rows_to_matrix(payload["instances"], schema, max_rows),
        probabilities=(
            "parameters" in payload and _v1_probabilities(payload["parameters"])
        ),
    )


def _v1_probabilities(parameters: object) -> bool:
    if not isinstance(parameters, dict):
        raise InvalidInput(
            f'"parameters" must be an object, got {json_type(parameters)}'
        )
    unknown = sorted(set(parameters) - V1_PARAMETERS)
    if unknown:
        raise InvalidInput(
            f'unknown parameter "{unknown[0]}": the only parameter is "probabilities"'
        )
    probabilities = parameters.get("probabilities", False)
    if not isinstance(probabilities, bool):
        raise InvalidInput(
            f'"parameters.probabilities" must be true or false, '
            f"got {json_type(probabilities)}"
        )
    return probabilities


def rows_to_matrix(
    instances: object, schema: RequestSchema, max_rows: int
) -> NDArray[np.float64]:
    """Rows of numbers, or objects keyed by the feature names, as a matrix."""
    if not isinstance(instances, list):
        raise InvalidInput(
            f'"instances" must be an array of rows, got {json_type(instances)}'
        )
    if not instances:
        raise InvalidInput('"instances" is empty: send at least one row')
    if len(instances) > max_rows:
        raise InvalidInput(
            f'"instances" has {len(instances)} rows, more than the limit of {max_rows}'
        )
    if len(instances) <= _FEW_ROWS:
        # For a few rows, plain loops and np.array cost less than the bulk checks.
        few = _few_rows_inside(instances, schema)
        if few is not None:
            return few
    matrix = _plain_rows(instances, schema.width)
    if matrix is None:
        matrix = np.array(
            [_row_values(index, row, schema) for index, row in enumerate(instances)],
            dtype=np.float64,
        )
    check_range(matrix, schema, "instances[{row}][{column}]")
    return matrix


def _few_rows_inside(
    instances: list[Any], schema: RequestSchema
) -> NDArray[np.float64] | None:
    """The common case for a few rows: lists of JSON numbers, each inside its range.

    None for anything else, valid or not: the general path decides, and words the
    error.
    """
    width = schema.width
    for row in instances:
        if (
            type(row) is not list
            or len(row) != width
            or not _NUMBER_TYPES.issuperset(map(type, row))
            or not schema.inside(row)
        ):
            return None
    return np.array(instances, dtype=np.float64)


def _plain_rows(instances: list[Any], width: int) -> NDArray[np.float64] | None:
    """The common case, checked in bulk: every row a list of width JSON numbers.

    The checks run as ``set(map(...))`` so that the loops are in C: for 1000 rows
    they cost a tenth of what Python-level loops would.
    """
    if (
        set(map(type, instances)) != {list}
        or set(map(len, instances)) != {width}
        or not set(map(type, chain.from_iterable(instances))) <= {float, int}
    ):
        return None
    values = np.fromiter(
        chain.from_iterable(instances),
        dtype=np.float64,
        count=len(instances) * width,
    )
    return values.reshape(len(instances), width)


def _row_values(index: int, row: object, schema: RequestSchema) -> list[float]:
    where = f"instances[{index}]"
    if isinstance(row, list):
        for column, value in enumerate(row):
            if isinstance(value, list | dict):
                raise InvalidInput(
                    f"{where}[{column}] is {json_type(value)}: a row is a flat array "
                    f"of {schema.width} numbers"
                )
        if len(row) != schema.width:
            raise InvalidInput(
                f"{where} has {len(row)} values, expected {schema.width}: "
                f"{schema.listing}"
            )
        labelled = [(f"{where}[{column}]", value) for column, value in enumerate(row)]
    elif isinstance(row, dict):
        unknown = sorted(set(row) - set(schema.features))
        if unknown:
            raise InvalidInput(
                f'{where} has an unknown feature "{unknown[0]}": expected '
                f"{schema.listing}"
            )
        missing = [name for name in schema.features if name not in row]
        if missing:
            raise InvalidInput(
                f"{where} is missing {missing[0]}: expected {schema.listing}"
            )
        labelled = [(f"{where}.{name}", row[name]) for name in schema.features]
    else:
        raise InvalidInput(
            f"{where} must be an array of {schema.width} numbers or an object "
            f"with {schema.listing}, got {json_type(row)}"
        )
    return [_number(label, value) for label, value in labelled]


def _number(where: str, value: object) -> float:
    if type(value) not in (int, float):
        raise InvalidInput(f"{where} must be a number, got {json_type(value)}")
    return float(value)  # type: ignore[arg-type]


def check_range(matrix: NDArray[np.float64], schema: RequestSchema, where: str) -> None:
    """Refuse values that are not finite or outside their feature's accepted range."""
    # NaN fails every comparison, so it is outside too.
    if len(matrix) <= _FEW_ROWS and all(map(schema.inside, matrix.tolist())):
        return
    inside = (matrix >= schema.minimums) & (matrix <= schema.maximums)
    if inside.all():
        return
    row, column = (int(i) for i in np.argwhere(~inside)[0])
    unit = schema.units[column]
    raise InvalidInput(
        f"{where.format(row=row, column=column)} = {matrix[row, column]:g} is "
        f"outside {schema.features[column]}'s accepted range "
        f"{schema.minimums[column]:g} to {schema.maximums[column]:g}"
        + (f" {unit}" if unit else "")
    )


def parse_v2(request: InferRequest, schema: RequestSchema, max_rows: int) -> V2Request:
    """Validate an Open Inference Protocol request: one FP32/FP64 [N, features]."""
    width = schema.width
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"expected exactly one input tensor of shape [N, {width}], "
            f"got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    dtype = V2_DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(
            f'input "{tensor.name}" has datatype {tensor.datatype}, '
            "expected FP32 or FP64"
        )
    shape = tensor.shape
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(size) is int for size in shape)
        or shape[1] != width
        or shape[0] < 1
    ):
        raise InvalidInput(
            f'input "{tensor.name}" has shape {shape}, '
            f"expected [N, {width}] with N >= 1"
        )
    if shape[0] > max_rows:
        raise InvalidInput(
            f'input "{tensor.name}" has {shape[0]} rows, more than the limit of '
            f"{max_rows}"
        )
    values = _tensor_values(tensor.name, tensor.data, shape[0] * width)
    check_range(
        values.reshape(shape),
        schema,
        f'input "{tensor.name}" row {{row}} column {{column}}',
    )
    # The tensor's own precision is what the client meant: FP32 values are rounded to
    # float32 before the model sees them.
    rows = values.astype(dtype).astype(np.float64).reshape(shape)
    return V2Request(rows=rows, outputs=_v2_outputs(request), request_id=request.id)


def _tensor_values(name: str, data: object, expected: int) -> NDArray[np.float64]:
    if not isinstance(data, list):
        raise InvalidInput(f'input "{name}" needs its values in "data" as an array')
    flat: list[object] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    if len(flat) != expected:
        raise InvalidInput(
            f'input "{name}" has {len(flat)} values, its shape needs {expected}'
        )
    return np.array(
        [
            _number(f'input "{name}" value {index}', value)
            for index, value in enumerate(flat)
        ],
        dtype=np.float64,
    )


def _v2_outputs(request: InferRequest) -> tuple[str, ...]:
    if not request.request_outputs:
        return ("predict",)
    names = tuple(output.name for output in request.request_outputs)
    for name in names:
        if name not in V2_OUTPUTS:
            raise InvalidInput(
                f'unknown output "{name}": this model has outputs '
                f"{', '.join(V2_OUTPUTS)}"
            )
    return names
