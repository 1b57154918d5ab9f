"""libsignal's ciphertext wire formats: ``SignalMessage`` and ``PreKeySignalMessage``.

Both start with one version byte: the high nibble is the session's message version (3 for X3DH sessions, 4 for
PQXDH sessions) and the low nibble the sender's current version, which receivers ignore (libsignal writes 4).
A ``SignalMessage`` is ``version || protobuf || mac[:8]`` where the MAC is HMAC-SHA256 keyed by the message key
over ``sender_identity || receiver_identity || version || protobuf`` (identities in 33-byte serialized form).
A ``PreKeySignalMessage`` is ``version || protobuf`` and carries a whole ``SignalMessage`` in field 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from parley_crypto import _protobuf as pb
from parley_crypto._errors import InvalidKeyError, InvalidMessageError, InvalidVersionError
from parley_crypto._keys import PublicKey

MAC_SIZE = 8
MIN_MESSAGE_VERSION = 3
MAX_MESSAGE_VERSION = 4
# The low nibble libsignal writes today; receivers (ours included) read only the high nibble.
CURRENT_VERSION_NIBBLE = 4


class MessageType(IntEnum):
    """libsignal's ``CiphertextMessageType`` numbers, as envelopes carry them."""

    WHISPER = 2
    PREKEY = 3
    SENDER_KEY = 7


class CiphertextMessage(NamedTuple):
    """An encrypted message ready to send.

    Attributes:
        type: ``MessageType.PREKEY`` while the session is unacknowledged, else ``MessageType.WHISPER``.
        body: the serialized libsignal message.
    """

    type: MessageType
    body: bytes


def version_byte(message_version: int) -> bytes:
    """The first byte of every message of a session of ``message_version``."""
    return bytes(((message_version << 4) | CURRENT_VERSION_NIBBLE,))


def check_version(first_byte: int) -> int:
    """The message version from a first byte.

    Raises:
        InvalidVersionError: a legacy (< 3) or unknown (> 4) version.
    """
    version = first_byte >> 4
    if not MIN_MESSAGE_VERSION <= version <= MAX_MESSAGE_VERSION:
        raise InvalidVersionError(f"unsupported message version {version}")
    return version


class SignalMessage(NamedTuple):
    """A parsed ``SignalMessage``; the MAC is checked later, against the session's message key.

    A named tuple rather than a dataclass: one is built per received message, and tuples build fastest.
    """

    version: int
    ratchet_key: PublicKey
    counter: int
    previous_counter: int
    ciphertext: bytes
    authenticated: bytes
    mac: bytes

    @classmethod
    def parse(cls, data: bytes) -> SignalMessage:
        """Parses a serialized ``SignalMessage`` (wire.proto: 1 ratchet_key, 2 counter, 3 previous_counter,
        4 ciphertext).

        Raises:
            InvalidVersionError: unsupported version byte.
            InvalidMessageError: truncated or malformed.
        """
        if len(data) < 1 + MAC_SIZE:
            raise InvalidMessageError("message too short")
        version = check_version(data[0])
        fast = _parse_canonical(data, version)
        if fast is not None:
            return fast
        try:
            fields = pb.decode(data[1:-MAC_SIZE])
            ratchet_key = PublicKey.deserialize(pb.get_bytes(fields, 1))
            counter = pb.get_int(fields, 2)
            previous = pb.get_int(fields, 3, 0)
            ciphertext = pb.get_bytes(fields, 4)
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidMessageError(f"malformed SignalMessage: {exc}") from exc
        if counter > 0xFFFFFFFF or previous > 0xFFFFFFFF:
            raise InvalidMessageError("counter out of uint32 range")
        return cls(version, ratchet_key, counter, previous, ciphertext, data[:-MAC_SIZE], data[-MAC_SIZE:])


def _varint_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A varint of at most 5 bytes (a uint32) at ``pos``, or ``(-1, pos)`` if it is not one."""
    result = 0
    for shift in range(0, 35, 7):
        if pos >= end:
            return -1, pos
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result, pos) if result <= 0xFFFFFFFF else (-1, pos)
    return -1, pos


def _parse_canonical(data: bytes, version: int) -> SignalMessage | None:
    """Parses the field order every libsignal implementation writes (1, 2, 3, 4, nothing else) without the
    generic decoder; returns None for any other layout, which the generic path then handles or rejects."""
    end = len(data) - MAC_SIZE
    if end < 38 or data[1] != 0x0A or data[2] != 0x21 or data[3] != 0x05 or data[36] != 0x10:
        return None
    counter, pos = _varint_at(data, 37, end)
    if counter < 0 or pos >= end or data[pos] != 0x18:
        return None
    previous, pos = _varint_at(data, pos + 1, end)
    if previous < 0 or pos >= end or data[pos] != 0x22:
        return None
    length, pos = _varint_at(data, pos + 1, end)
    if length < 0 or pos + length != end:
        return None
    return SignalMessage(version, PublicKey(data[4:36]), counter, previous, data[pos:end], data[:end], data[end:])


@dataclass(frozen=True, slots=True)
class PreKeySignalMessage:
    """A parsed ``PreKeySignalMessage``: X3DH/PQXDH parameters plus the first ``SignalMessage``.

    Attributes:
        version: the message version (3 X3DH, 4 PQXDH).
        registration_id: the sender's registration id.
        prekey_id: the one-time prekey used, if any.
        signed_prekey_id: the signed prekey used.
        kyber_prekey_id: the PQ prekey used (PQXDH only).
        kyber_ciphertext: the ML-KEM ciphertext, ``0x08`` + 1568 bytes (PQXDH only).
        base_key: the sender's ephemeral base key.
        identity_key: the sender's identity key.
        message: the embedded ``SignalMessage``.
        message_bytes: its serialized form.
    """

    version: int
    registration_id: int
    prekey_id: int | None
    signed_prekey_id: int
    kyber_prekey_id: int | None
    kyber_ciphertext: bytes | None
    base_key: PublicKey
    identity_key: PublicKey
    message: SignalMessage
    message_bytes: bytes

    @classmethod
    def parse(cls, data: bytes) -> PreKeySignalMessage:
        """Parses a serialized ``PreKeySignalMessage`` (wire.proto: 1 pre_key_id, 2 base_key, 3 identity_key,
        4 message, 5 registration_id, 6 signed_pre_key_id, 7 kyber_pre_key_id, 8 kyber_ciphertext).

        Raises:
            InvalidVersionError: unsupported version byte.
            InvalidMessageError: truncated or malformed, or the PQ fields are half present.
        """
        if not data:
            raise InvalidMessageError("message too short")
        version = check_version(data[0])
        try:
            fields = pb.decode(data[1:])
            prekey_id = pb.get_int(fields, 1) if 1 in fields else None
            base_key = PublicKey.deserialize(pb.get_bytes(fields, 2))
            identity_key = PublicKey.deserialize(pb.get_bytes(fields, 3))
            message_bytes = pb.get_bytes(fields, 4)
            registration_id = pb.get_int(fields, 5, 0)
            signed_prekey_id = pb.get_int(fields, 6)
            kyber_prekey_id = pb.get_int(fields, 7) if 7 in fields else None
            kyber_ciphertext = pb.get_bytes(fields, 8) if 8 in fields else None
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidMessageError(f"malformed PreKeySignalMessage: {exc}") from exc
        if (kyber_prekey_id is None) != (kyber_ciphertext is None):
            raise InvalidMessageError("PQ prekey id and ciphertext must come together")
        if (kyber_prekey_id is not None) != (version == MAX_MESSAGE_VERSION):
            raise InvalidMessageError("PQXDH fields must match message version 4")
        message = SignalMessage.parse(message_bytes)
        if message.version != version:
            raise InvalidMessageError("inner message version differs")
        return cls(
            version,
            registration_id,
            prekey_id,
            signed_prekey_id,
            kyber_prekey_id,
            kyber_ciphertext,
            base_key,
            identity_key,
            message,
            message_bytes,
        )


def encode_prekey_message(
    *,
    version: int,
    registration_id: int,
    prekey_id: int | None,
    signed_prekey_id: int,
    kyber_prekey_id: int | None,
    kyber_ciphertext: bytes | None,
    base_key: PublicKey,
    identity_key: PublicKey,
    message: bytes,
) -> bytes:
    """Serializes a ``PreKeySignalMessage`` around an already serialized ``SignalMessage``."""
    parts = [version_byte(version)]
    if prekey_id is not None:
        parts.append(pb.field_varint(1, prekey_id))
    parts.append(pb.field_bytes(2, base_key.serialize()))
    parts.append(pb.field_bytes(3, identity_key.serialize()))
    parts.append(pb.field_bytes(4, message))
    parts.append(pb.field_varint(5, registration_id))
    parts.append(pb.field_varint(6, signed_prekey_id))
    if kyber_prekey_id is not None and kyber_ciphertext is not None:
        parts.append(pb.field_varint(7, kyber_prekey_id))
        parts.append(pb.field_bytes(8, kyber_ciphertext))
    return b"".join(parts)
