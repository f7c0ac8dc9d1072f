"""A model file is a zip: what it unpacks to is bounded before skops reads it."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from tests.api.models import many_members, zip_bomb
from training.store.errors import IntegrityError
from training.store.layout import MIB
from training.store.model_file import dump_model, load_model
from training.train import TrainedModel


def test_a_model_file_within_the_limits_loads(trained: TrainedModel) -> None:
    loaded = load_model(dump_model(trained.estimator), source="good")

    assert loaded.predict(trained.split.x_test).tolist() == (
        trained.estimator.predict(trained.split.x_test).tolist()
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            zip_bomb(300),
            "bomb: refused to load: its zip members unpack to 314572800 bytes, "
            "more than the limit of 268435456",
        ),
        (
            many_members(10_001),
            "bomb: refused to load: more than the limit of 10000 zip members "
            "(10001 entries)",
        ),
    ],
    ids=["unpacked size", "members"],
)
def test_a_zip_past_a_limit_is_refused_before_it_is_unpacked(
    data: bytes, reason: str
) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError) as refused:
            load_model(data, source="bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert str(refused.value) == reason
    assert peak < 16 * MIB


def test_a_zip_that_declares_less_than_it_holds_is_not_unpacked_past_it() -> None:
    bomb = zip_bomb(300)
    # Declare 1 MiB unpacked, in the local header and in the central directory.
    declared = struct.pack("<I", MIB)
    lying = bytearray(bomb)
    lying[22:26] = declared
    central = bomb.rindex(b"PK\x01\x02")
    lying[central + 24 : central + 28] = declared

    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError) as refused:
            load_model(bytes(lying), source="liar")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert str(refused.value).startswith("liar: not a readable skops file: ")
    assert peak < 16 * MIB
