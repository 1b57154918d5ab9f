"""Proto3 field helpers for SPQR's state messages, laid out as prost writes them.

prost writes fields in declaration order (which in ``pq_ratchet.proto`` is field-number order), leaves scalar
fields at their default (0, empty, false) out, and always writes a present sub-message, even an empty one.
Matching that is what makes a serialized state byte-identical to the reference's.
"""

from __future__ import annotations

from parley_crypto import _protobuf as pb
from parley_crypto._spqr._errors import SpqrStateError


def opt_bytes(number: int, value: bytes) -> bytes:
    """A ``bytes`` field, omitted when empty."""
    return pb.field_bytes(number, value) if value else b""


def opt_varint(number: int, value: int) -> bytes:
    """A varint field (``uint32``, ``uint64``, enum, bool), omitted when zero."""
    return pb.field_varint(number, value) if value else b""


def message(number: int, value: bytes) -> bytes:
    """A present sub-message field, written even when its encoding is empty."""
    return pb.field_bytes(number, value)


def decode(data: bytes) -> pb.Fields:
    """Splits state bytes into fields.

    Raises:
        SpqrStateError: the bytes are not a protobuf message.
    """
    try:
        return pb.decode(data)
    except pb.DecodeError as exc:
        raise SpqrStateError(f"malformed SPQR state: {exc}") from exc


def get_bytes(fields: pb.Fields, number: int) -> bytes:
    """A ``bytes`` field, empty when absent."""
    try:
        return pb.get_bytes(fields, number, b"")
    except pb.DecodeError as exc:
        raise SpqrStateError(str(exc)) from exc


def get_int(fields: pb.Fields, number: int, limit: int = 0xFFFFFFFFFFFFFFFF) -> int:
    """A varint field, zero when absent.

    Raises:
        SpqrStateError: the value is not a varint or exceeds ``limit``.
    """
    try:
        value = pb.get_int(fields, number, 0)
    except pb.DecodeError as exc:
        raise SpqrStateError(str(exc)) from exc
    if value > limit:
        raise SpqrStateError(f"field {number} out of range")
    return value


def get_message(fields: pb.Fields, number: int) -> bytes | None:
    """A sub-message's bytes, or None when the field is absent (``Option::None`` in the reference)."""
    if number not in fields:
        return None
    return get_bytes(fields, number)


def require_message(fields: pb.Fields, number: int) -> bytes:
    """A sub-message's bytes.

    Raises:
        SpqrStateError: the field is absent (the reference's ``ok_or(Error::StateDecode)``).
    """
    value = get_message(fields, number)
    if value is None:
        raise SpqrStateError(f"missing field {number}")
    return value


def get_repeated(fields: pb.Fields, number: int) -> list[bytes]:
    """All values of a repeated ``bytes`` or message field."""
    try:
        return pb.get_repeated_bytes(fields, number)
    except pb.DecodeError as exc:
        raise SpqrStateError(str(exc)) from exc
