"""A minimal protobuf (wire format) encoder and decoder for the records this library stores.

Identity, prekey, session and sender-key records are laid out like libsignal's storage.proto messages; they
are written once per operation, off the message hot path, and their versioned formats belong to this library,
so a small codec here keeps them independent of generated code. The wire messages use the generated code of
protos/parley/signal/v1/wire.proto instead (see ``_wire``), which measured faster.
"""

from __future__ import annotations

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_BYTES = 2
WIRE_FIXED32 = 5

FieldValue = int | bytes
Fields = dict[int, list[FieldValue]]


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


def encode_varint(value: int) -> bytes:
    """Encodes a non-negative integer as a protobuf varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return encode_varint((field << 3) | wire)


def field_bytes(field: int, value: bytes) -> bytes:
    """A length-delimited field (``bytes``, ``string`` or nested message)."""
    return _key(field, WIRE_BYTES) + encode_varint(len(value)) + value


def field_varint(field: int, value: int) -> bytes:
    """A varint field (``uint32``, ``uint64``, ``bool``)."""
    return _key(field, WIRE_VARINT) + encode_varint(value)


def field_fixed64(field: int, value: int) -> bytes:
    """A ``fixed64`` field."""
    return _key(field, WIRE_FIXED64) + value.to_bytes(8, "little")


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise DecodeError("varint longer than 64 bits")


def decode(data: bytes) -> Fields:
    """Splits a message into its fields; unknown fields are kept, groups are rejected.

    Returns:
        Field number to the list of its values in order (repeated fields have several).

    Raises:
        DecodeError: truncated or malformed input.
    """
    fields: Fields = {}
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: FieldValue
        if wire == WIRE_VARINT:
            value, pos = _read_varint(data, pos, end)
        elif wire == WIRE_BYTES:
            length, pos = _read_varint(data, pos, end)
            if pos + length > end:
                raise DecodeError("truncated length-delimited field")
            value = data[pos : pos + length]
            pos += length
        elif wire == WIRE_FIXED64:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            value = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == WIRE_FIXED32:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            value = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def get_bytes(fields: Fields, number: int, default: bytes | None = None) -> bytes:
    """The last value of a bytes field (protobuf's rule for repeated singular fields).

    Raises:
        DecodeError: the field is missing (and has no default) or is not length-delimited.
    """
    values = fields.get(number)
    if not values:
        if default is None:
            raise DecodeError(f"missing field {number}")
        return default
    value = values[-1]
    if not isinstance(value, bytes):
        raise DecodeError(f"field {number} is not length-delimited")
    return value


def get_int(fields: Fields, number: int, default: int | None = None) -> int:
    """The last value of an integer field.

    Raises:
        DecodeError: the field is missing (and has no default) or is length-delimited.
    """
    values = fields.get(number)
    if not values:
        if default is None:
            raise DecodeError(f"missing field {number}")
        return default
    value = values[-1]
    if not isinstance(value, int):
        raise DecodeError(f"field {number} is not an integer")
    return value


def get_repeated_bytes(fields: Fields, number: int) -> list[bytes]:
    """All values of a repeated bytes or message field, in order.

    Raises:
        DecodeError: a value is not length-delimited.
    """
    out: list[bytes] = []
    for value in fields.get(number, ()):
        if not isinstance(value, bytes):
            raise DecodeError(f"field {number} is not length-delimited")
        out.append(value)
    return out
