"""The small protobuf codec used for stored records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley_crypto import _protobuf as pb


@given(number=st.integers(1, 2**28), value=st.integers(0, 2**64 - 1), data=st.binary(max_size=300))
def test_fields_round_trip(number: int, value: int, data: bytes) -> None:
    fields = pb.decode(pb.field_varint(number, value) + pb.field_bytes(number + 1, data))
    assert pb.get_int(fields, number) == value
    assert pb.get_bytes(fields, number + 1, b"") == data


def test_fixed64_and_repeated() -> None:
    fields = pb.decode(pb.field_fixed64(5, 1234567890123) + pb.field_bytes(4, b"a") + pb.field_bytes(4, b"b"))
    assert pb.get_int(fields, 5) == 1234567890123
    assert pb.get_repeated_bytes(fields, 4) == [b"a", b"b"]
    assert pb.get_bytes(fields, 4) == b"b", "the last value of a singular field wins, as in protobuf"


@pytest.mark.parametrize(
    "data",
    [b"\x08", b"\x0a\x05ab", b"\x09\x00", b"\x0d\x00", b"\x00\x01", b"\x0b", b"\x08" + b"\xff" * 10 + b"\x01"],
    ids=["truncated-varint", "truncated-bytes", "truncated-fixed64", "truncated-fixed32", "field-0", "group", "long"],
)
def test_malformed_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(pb.DecodeError):
        pb.decode(data)


def test_missing_or_mistyped_fields() -> None:
    fields = pb.decode(pb.field_varint(1, 7) + pb.field_bytes(2, b"x"))
    with pytest.raises(pb.DecodeError):
        pb.get_bytes(fields, 1)
    with pytest.raises(pb.DecodeError):
        pb.get_int(fields, 2)
    with pytest.raises(pb.DecodeError):
        pb.get_int(fields, 3)
    assert pb.get_int(fields, 3, 0) == 0
