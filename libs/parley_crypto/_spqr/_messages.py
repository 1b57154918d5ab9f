"""The V1 ``pq_ratchet`` message: what goes into field 5 of a SignalMessage, serialized by hand as SPQR does.

    version      1 byte (1)
    epoch        varint (never 0)
    index        varint (u32): the message key's index in its chain, 0 while no chain runs
    type         1 byte: 0 none, 1 hdr, 2 ek, 3 ek+ct1-ack, 4 ct1-ack, 5 ct1, 6 ct2
    chunk        for types 1, 2, 3, 5, 6: varint chunk index (u16), then 32 data bytes

Trailing bytes are ignored, as the reference allows for later versions to extend a message. (SPQR's .proto
also declares a ``V1Msg``; the reference never uses it on the wire.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from parley_crypto._spqr._erasure import CHUNK_SIZE, Chunk
from parley_crypto._spqr._errors import SpqrMessageError

VERSION_V1 = 1
_MAX_VARINT_BYTES = 10


class MessageType(IntEnum):
    """The payload kinds of a V1 message."""

    NONE = 0
    HDR = 1
    EK = 2
    EK_CT1_ACK = 3
    CT1_ACK = 4
    CT1 = 5
    CT2 = 6


# By wire value, so parsing indexes a tuple rather than calling the enum.
_TYPES = tuple(sorted(MessageType))
_TYPE_BYTES = tuple(bytes((kind,)) for kind in _TYPES)
_VERSION_BYTE = bytes((VERSION_V1,))
_WITH_CHUNK = frozenset({MessageType.HDR, MessageType.EK, MessageType.EK_CT1_ACK, MessageType.CT1, MessageType.CT2})


@dataclass(frozen=True)
class Message:
    """One braid message: its epoch, its payload kind and, for most kinds, one erasure-coded chunk."""

    epoch: int
    kind: MessageType
    chunk: Chunk | None = None

    def serialize(self, index: int) -> bytes:
        """The wire bytes, carrying the message-key ``index`` the chain gave this message."""
        head = _VERSION_BYTE + encode_varint(self.epoch) + encode_varint(index) + _TYPE_BYTES[self.kind]
        if self.kind in _WITH_CHUNK:
            assert self.chunk is not None
            return head + encode_varint(self.chunk.index) + self.chunk.data
        return head

    @classmethod
    def deserialize(cls, data: bytes) -> tuple[Message, int]:
        """Parses wire bytes into ``(message, key index)``.

        Raises:
            SpqrMessageError: wrong version byte, epoch 0, truncated or out-of-range fields, unknown type.
        """
        if not data or data[0] != VERSION_V1:
            raise SpqrMessageError("not a V1 SPQR message")
        epoch, at = decode_varint(data, 1)
        if epoch == 0:
            raise SpqrMessageError("epoch 0")
        index, at = decode_varint(data, at)
        if index > 0xFFFFFFFF:
            raise SpqrMessageError("key index out of range")
        if at >= len(data):
            raise SpqrMessageError("truncated SPQR message")
        if data[at] >= len(_TYPES):
            raise SpqrMessageError(f"unknown SPQR message type {data[at]}")
        kind = _TYPES[data[at]]
        at += 1
        chunk = None
        if kind in _WITH_CHUNK:
            chunk_index, at = decode_varint(data, at)
            if at + CHUNK_SIZE > len(data) or chunk_index > 0xFFFF:
                raise SpqrMessageError("truncated or malformed chunk")
            chunk = Chunk(chunk_index, bytes(data[at : at + CHUNK_SIZE]))
        return cls(epoch, kind, chunk), index


_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))


def encode_varint(value: int) -> bytes:
    """LEB128 of a u64, as the reference writes it."""
    if value < 0x80:  # epochs, small key indexes and chunk indexes: one byte
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | value & 0x7F)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, at: int) -> tuple[int, int]:
    """Reads a varint of at most 10 bytes at ``at``: ``(value, next offset)``.

    Bits beyond 64 in a tenth byte are dropped, as the reference's shift into a u64 drops them.

    Raises:
        SpqrMessageError: no complete varint there.
    """
    if at < len(data) and data[at] < 0x80:  # the common one-byte case
        return data[at], at + 1
    value = 0
    for i in range(min(_MAX_VARINT_BYTES, len(data) - at)):
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, at + i + 1
    raise SpqrMessageError("truncated varint")
