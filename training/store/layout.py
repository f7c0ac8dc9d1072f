"""The layout of a model store: where each file lives and what it contains.

A store (a directory or an S3 prefix) holds::

    latest.json                      the pointer: {"version", "metadata_sha256"}
    versions/<version>/model.skops   the fitted estimator, in skops format
    versions/<version>/metadata.json ModelMetadata, including the model file's sha256
    versions/<version>/grid.npz      the serving artifact (``grid``), when it fits
    history/<id>.json                one PointerChange per move of the pointer

The metadata holds the model's schema (its features, their units and accepted
ranges, its classes) and golden rows, so a predictor needs nothing else to serve it.

A version becomes visible only when the pointer names it, and the pointer is written
last. Every read is verified along the chain pointer -> metadata -> model file.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

POINTER_NAME: Final = "latest.json"
VERSIONS_DIR: Final = "versions"
MODEL_FILE: Final = "model.skops"
GRID_FILE: Final = "grid.npz"
METADATA_FILE: Final = "metadata.json"
HISTORY_DIR: Final = "history"
SCHEMA_VERSION: Final = 1

# UTC time to the microsecond, then 6 random hex digits: fixed width, so versions
# sort by time and no version can be a prefix of another.
VERSION_PATTERN = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{6}$")
SHA256_PATTERN = r"^[0-9a-f]{64}$"

MIB: Final = 1024 * 1024
# The most a reader reads of each file, whatever the store says its size is: a
# hostile or broken store cannot make a reader hold more than this in memory.
MAX_POINTER_BYTES: Final = 64 * 1024
MAX_METADATA_BYTES: Final = 1 * MIB
MAX_MODEL_BYTES: Final = 256 * MIB
# A model file is a zip: what its members unpack to is bounded too (a zip bomb).
MAX_MODEL_UNPACKED_BYTES: Final = 256 * MIB
MAX_MODEL_MEMBERS: Final = 10_000

# Bounds on what metadata may hold: it reaches logs, /metrics labels and JSON
# responses, where a 10 MB string or a 100-digit integer does harm.
MAX_NAME_CHARS: Final = 100
MAX_ITEMS: Final = 1000
MAX_COUNT: Final = 2**53
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Ratio = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
HyperparameterValue = (
    Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]
    | Finite
    | Annotated[str, Field(max_length=MAX_NAME_CHARS)]
    | None
)


def new_version(now: datetime | None = None) -> str:
    """Return a fresh version id such as ``20261122T200549123456Z-3f9a1c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"


def is_version(name: str) -> bool:
    return VERSION_PATTERN.fullmatch(name) is not None


def history_key(event_id: str) -> str:
    return f"{HISTORY_DIR}/{event_id}.json"


def version_time(version: str) -> datetime:
    """When a version was made, from its id."""
    return datetime.strptime(version[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def version_key(version: str, filename: str) -> str:
    """The path of one of a version's files, relative to the store's root."""
    return f"{VERSIONS_DIR}/{version}/{filename}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Pointer(BaseModel):
    """The content of ``latest.json``: which version is current."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(pattern=VERSION_PATTERN.pattern)
    metadata_sha256: str = Field(pattern=SHA256_PATTERN)


class Metrics(BaseModel):
    """How the model scored on data it was not trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy: Ratio
    precision_macro: Ratio
    recall_macro: Ratio
    f1_macro: Ratio
    confusion_matrix: list[list[Count]] = Field(max_length=MAX_ITEMS)
    cv_accuracy_mean: Ratio
    cv_accuracy_std: Ratio
    cv_folds: Count
    train_rows: Count
    test_rows: Count


class FeatureStats(BaseModel):
    """One feature's distribution in the training split, the baseline for drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: Finite
    max: Finite
    mean: Finite
    std: Finite
    # The drift reference (training/store/reference.py); empty in metadata published
    # before it existed, and then the predictor exports no drift scores.
    bin_edges: list[float] = Field(
        default_factory=list,
        description="Training deciles, ascending: the PSI's bins (-inf, e0], ..., "
        "(e_last, inf).",
    )
    bin_fractions: list[float] = Field(
        default_factory=list, description="Share of training rows in each PSI bin."
    )
    cdf_values: list[float] = Field(
        default_factory=list,
        description="Training percentiles, ascending: where the CDF is recorded.",
    )
    cdf_fractions: list[float] = Field(
        default_factory=list,
        description="Share of training rows at or below each of cdf_values.",
    )

    @model_validator(mode="after")
    def _reference_is_consistent(self) -> FeatureStats:
        if self.bin_edges and len(self.bin_fractions) != len(self.bin_edges) + 1:
            raise ValueError("bin_fractions needs one more entry than bin_edges")
        if len(self.cdf_fractions) != len(self.cdf_values):
            raise ValueError("cdf_fractions needs one entry per cdf_values")
        for name in ("bin_edges", "cdf_values", "cdf_fractions"):
            values = getattr(self, name)
            if any(b <= a for a, b in itertools.pairwise(values)):
                raise ValueError(f"{name} must be strictly ascending")
        if any(
            not 0 <= share <= 1 for share in self.bin_fractions + self.cdf_fractions
        ):
            raise ValueError("fractions must lie in [0, 1]")
        return self


class FeatureSchema(BaseModel):
    """One input column: its name in a request, its unit, the values accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    unit: str | None = None
    # The accepted range: training's observed range widened by a margin.
    min: float
    max: float


class GoldenRows(BaseModel):
    """Held-out rows and the exact probabilities training's scikit-learn gave them.

    A loaded model must reproduce them bit for bit before it serves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: list[list[float]] = Field(min_length=1)
    probabilities: list[list[float]] = Field(min_length=1)


class ServingArtifact(BaseModel):
    """The model compiled for serving with NumPy alone (``training.store.grid``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Literal["grid.npz"] = GRID_FILE
    format: Literal["threshold-grid-npz"] = "threshold-grid-npz"
    sha256: str = Field(pattern=SHA256_PATTERN)


class ModelCard(BaseModel):
    """What training knows about a model: how it was made and how well it does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Name
    hyperparameters: dict[Name, HyperparameterValue] = Field(max_length=MAX_ITEMS)
    metrics: Metrics
    feature_names: list[Name] = Field(min_length=1, max_length=MAX_ITEMS)
    class_names: list[Name] = Field(min_length=1, max_length=MAX_ITEMS)
    feature_stats: dict[Name, FeatureStats] = Field(max_length=MAX_ITEMS)
    class_priors: list[Ratio] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Each class's share of the training rows, in class_names order: "
        "the reference of the predictions' drift. Empty in older metadata.",
    )
    random_state: Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]
    test_fraction: Ratio
    dataset_sha256: str = Field(pattern=SHA256_PATTERN)
    # The schema a request follows; class ids index ``classes``.
    features: list[FeatureSchema] = Field(min_length=1, max_length=MAX_ITEMS)
    classes: list[Name] | list[int] = Field(min_length=2, max_length=MAX_ITEMS)
    golden: GoldenRows
    # The held-out rows' identity: models with the same one never trained on them.
    evaluation_sha256: str | None = Field(None, pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _stats_describe_the_features(self) -> ModelCard:
        # Each feature's statistics become metric series: only the model's own.
        if set(self.feature_stats) != set(self.feature_names):
            extra = sorted(set(self.feature_stats) ^ set(self.feature_names))
            raise ValueError(
                f"feature_stats must describe exactly the {len(self.feature_names)} "
                f"features, {len(extra)} names differ"
            )
        return self


class ModelMetadata(ModelCard):
    """A model card as published: it adds what the store records at publish time.

    ``metadata.json`` holds one of these; a reader needs nothing else to trust and
    explain the model beside it.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    version: str = Field(pattern=VERSION_PATTERN.pattern)
    created_at: datetime
    sklearn_version: Name
    python_version: Name
    model_file: Literal["model.skops"] = MODEL_FILE
    model_format: Literal["skops"] = "skops"
    model_sha256: str = Field(pattern=SHA256_PATTERN)
    # None when the grid would be too large: then only the model file can serve.
    serving_artifact: ServingArtifact | None = None


class PointerChange(BaseModel):
    """One move of the pointer; each is its own file, so writers never clash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    action: Literal["publish", "rollback", "promote"]
    version: str = Field(pattern=VERSION_PATTERN.pattern)
    previous_version: str | None = Field(None, pattern=VERSION_PATTERN.pattern)
    reason: str
    by: str
