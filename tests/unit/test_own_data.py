"""``python -m training --data``: a CSV trains a model, and bad data is refused with
a clear message and exit 2 before anything is published."""

from __future__ import annotations

import io
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from minio import Minio

from tests.conftest import S3Server
from training.__main__ import main
from training.gate import ExitCode
from training.store import open_store

HEADER = "a,b,label\n"
# Three well-separated classes, ten rows each.
GOOD = HEADER + "".join(
    f"{x + i * 0.01},{y - i * 0.01},{label}\n"
    for x, y, label in ((0, 0, "red"), (5, 5, "green"), (10, 0, "blue"))
    for i in range(10)
)


def train_on(tmp_path: Path, data: str, *flags: str) -> tuple[int, Path]:
    models = tmp_path / "models"
    path = tmp_path / "data.csv"
    path.write_text(data)
    code = main(
        [
            "--data",
            str(path),
            "--target",
            "label",
            "--model_uri",
            str(models),
            "--cv_folds",
            "3",
            *flags,
        ]
    )
    return code, models


def test_a_csv_with_string_classes_is_published(tmp_path: Path) -> None:
    code, models = train_on(tmp_path, GOOD)

    assert code == ExitCode.PUBLISHED
    current = open_store(str(models)).load_current()
    assert current is not None
    assert current.metadata.classes == ["blue", "green", "red"]
    assert [feature.name for feature in current.metadata.features] == ["a", "b"]
    assert current.metadata.features[0].unit is None


def test_integer_classes_stay_integers(tmp_path: Path) -> None:
    code, models = train_on(
        tmp_path, GOOD.replace("red", "7").replace("green", "3").replace("blue", "11")
    )

    assert code == ExitCode.PUBLISHED
    current = open_store(str(models)).load_current()
    assert current is not None
    assert current.metadata.classes == [3, 7, 11]


@pytest.mark.parametrize(
    ("data", "flags", "problem"),
    [
        ("", (), "data.csv is empty: it needs a header row and data rows"),
        (HEADER, (), "data.csv has a header but no data rows"),
        (
            GOOD.replace("label", "kind"),
            (),
            'data.csv has no target column "label": its columns are a, b, kind',
        ),
        (
            GOOD.replace("5.0,5.0,green", "5.0,five,green", 1),
            (),
            'data.csv line 12 column "b" is "five": features must be numbers',
        ),
        (
            GOOD.replace("5.0,5.0,green", "5.0,,green", 1),
            (),
            'data.csv line 12 column "b" is empty: features must be numbers',
        ),
        (
            GOOD.replace("5.0,5.0,green", "5.0,nan,green", 1),
            (),
            'data.csv line 12 column "b" is nan: features must be finite numbers',
        ),
        (
            GOOD.replace("green", "red").replace("blue", "red"),
            (),
            'data.csv: "label" has a single class (red)',
        ),
        (GOOD, ("--max_data_rows", "29"), "more rows than the limit of 29"),
        (GOOD, ("--max_data_columns", "2"), "has 3 columns, more than the limit of 2"),
        (
            GOOD + "1,1,purple\n",
            (),
            "data.csv: cannot hold out a test set: The least populated class",
        ),
        (
            GOOD + "1,1,purple\n1,2,purple\n",
            (),
            'class "purple" has 1 training rows, fewer than the 3 cross-validation',
        ),
    ],
)
def test_bad_data_exits_2_and_publishes_nothing(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    data: str,
    flags: tuple[str, ...],
    problem: str,
) -> None:
    code, models = train_on(tmp_path, data, *flags)

    assert code == ExitCode.USAGE
    assert problem in caplog.text
    assert "bad training data, nothing published" in caplog.text
    assert not models.exists()


def test_a_missing_file_exits_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nowhere.csv"

    code = main(["--data", str(missing), "--target", "label"])

    assert code == ExitCode.USAGE
    assert f"{missing}: cannot read: No such file or directory" in caplog.text


def test_a_csv_in_the_bucket_trains(
    s3_env: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = f"data-{secrets.token_hex(4)}"
    client = Minio(
        urlsplit(s3_env.endpoint).netloc,
        access_key=s3_env.access_key_id,
        secret_key=s3_env.secret_access_key,
        secure=False,
    )
    client.make_bucket(bucket)
    body = GOOD.encode()
    client.put_object(bucket, "sets/colours.csv", io.BytesIO(body), len(body))
    models = str(tmp_path / "models")
    common = ["--target", "label", "--model_uri", models, "--cv_folds", "3"]

    assert main(["--data", f"s3://{bucket}/sets/colours.csv", *common]) == 0
    assert main(["--data", f"s3://{bucket}/sets/none.csv", *common]) == 2
    assert f"s3://{bucket}/sets/none.csv: no such object" in caplog.text
