"""The V1 ``pq_ratchet`` wire message: the reference's varint vectors, the byte layout, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley_crypto._spqr._erasure import Chunk
from parley_crypto._spqr._errors import SpqrMessageError
from parley_crypto._spqr._messages import Message, MessageType, decode_varint, encode_varint

pytestmark = pytest.mark.timeout(60)


def test_reference_varint_vectors() -> None:
    # The reference's encoding_varint, decoding_varint and decoding_varint_zero.
    assert encode_varint(0x012C) == b"\xac\x02"
    assert decode_varint(b"\xff\xac\x02\xff", 1) == (0x012C, 3)
    assert decode_varint(b"\x00", 0) == (0, 1)


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded, 0) == (value, len(encoded))


def test_tenth_varint_byte_keeps_only_its_low_bit() -> None:
    # A u64 shift drops what does not fit, so the reference reads this as 2^63 and so do we.
    assert decode_varint(b"\x80" * 9 + b"\x7f", 0) == (1 << 63, 10)
    with pytest.raises(SpqrMessageError):
        decode_varint(b"\x80" * 10 + b"\x01", 0)  # an eleventh byte is never read
    with pytest.raises(SpqrMessageError):
        decode_varint(b"\x80", 0)


def test_layout_with_and_without_a_chunk() -> None:
    chunk = Chunk(300, bytes(range(32)))
    assert Message(2, MessageType.CT1, chunk).serialize(5) == b"\x01\x02\x05\x05\xac\x02" + bytes(range(32))
    assert Message(1, MessageType.NONE).serialize(0) == b"\x01\x01\x00\x00"
    assert Message(1, MessageType.CT1_ACK).serialize(128) == b"\x01\x01\x80\x01\x04"


@pytest.mark.parametrize("kind", list(MessageType))
def test_round_trip_of_every_kind(kind: MessageType) -> None:
    chunk = None if kind in (MessageType.NONE, MessageType.CT1_ACK) else Chunk(65535, b"\x07" * 32)
    message = Message(2**40, kind, chunk)
    assert Message.deserialize(message.serialize(2**32 - 1)) == (message, 2**32 - 1)


def test_trailing_bytes_are_allowed_for_later_versions() -> None:
    raw = Message(3, MessageType.NONE).serialize(1) + b"future"
    assert Message.deserialize(raw) == (Message(3, MessageType.NONE), 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # nothing
        b"\x02\x01\x00\x00",  # version 2
        b"\x01\x00\x00\x00",  # epoch 0
        b"\x01\x01\x00",  # no type
        b"\x01\x01\x00\x07",  # type 7
        b"\x01\x01\x80\x80\x80\x80\x10\x00",  # key index 2^32
        b"\x01\x01\x00\x01\x00" + bytes(31),  # chunk one byte short
        b"\x01\x01\x00\x01\x80\x80\x04" + bytes(32),  # chunk index 65536
    ],
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(SpqrMessageError):
        Message.deserialize(raw)
