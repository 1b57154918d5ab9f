"""libsignal's ciphertext wire formats: ``SignalMessage`` and ``PreKeySignalMessage``.

Both start with one version byte: the high nibble is the session's message version (3 for X3DH sessions, 4 for
PQXDH sessions) and the low nibble the sender's current version, which receivers ignore (libsignal writes 4).
A ``SignalMessage`` is ``version || protobuf || mac[:8]`` where the MAC is HMAC-SHA256 keyed by the message key
over ``sender_identity || receiver_identity || version || protobuf`` (identities in 33-byte serialized form).
A ``PreKeySignalMessage`` is ``version || protobuf`` and carries a whole ``SignalMessage`` in field 4.
Version-4 sessions add the SPQR message as ``SignalMessage`` field 5 (``pq_ratchet``), inside the MAC.
Field 6 (``addresses``, libsignal since 0.9x) binds sender and recipient into the MAC: each address as its
17-byte fixed-width service id (kind byte, UUID) and a device-id byte. libsignal writes it into the messages a
prekey message carries, when both names are service ids, and refuses any message whose field 6 names other
addresses.
The protobuf bodies use the generated code of protos/parley/signal/v1/wire.proto (libsignal's field numbers):
measured, its upb runtime parses a ``SignalMessage`` in 1.0 us and builds one in 0.7 us, against 2.9 us and
1.1 us for the hand-rolled codec this library started with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from parley.signal.v1 import wire_pb2
from parley_crypto import _protobuf as pb
from parley_crypto._errors import InvalidKeyError, InvalidMessageError, InvalidVersionError
from parley_crypto._keys import PublicKey

MAC_SIZE = 8
MIN_MESSAGE_VERSION = 3
MAX_MESSAGE_VERSION = 4
# The low nibble libsignal writes today; receivers (ours included) read only the high nibble.
CURRENT_VERSION_NIBBLE = 4
ADDRESSES_FIELD = 6
# A service id string: an ACI is a hyphenated UUID, a PNI the same behind "PNI:" (libsignal's ServiceId parser
# takes only the 36-character hyphenated form, in either case).
_SERVICE_ID = re.compile(
    r"(PNI:)?([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{12})"
)
_ACI_KIND, _PNI_KIND = 0, 1


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
    pq_ratchet: bytes = b""
    addresses: bytes | None = None

    @classmethod
    def parse(cls, data: bytes) -> SignalMessage:
        """Parses a serialized ``SignalMessage``.

        Raises:
            InvalidVersionError: unsupported version byte.
            InvalidMessageError: truncated or malformed.
        """
        if len(data) < 1 + MAC_SIZE:
            raise InvalidMessageError("message too short")
        version = check_version(data[0])
        body = wire_pb2.SignalMessage()
        try:
            body.ParseFromString(data[1:-MAC_SIZE])
        except DecodeError as exc:
            raise InvalidMessageError(f"malformed SignalMessage: {exc}") from exc
        if not (body.HasField("ratchet_key") and body.HasField("counter") and body.HasField("ciphertext")):
            raise InvalidMessageError("SignalMessage lacks a required field")
        try:
            ratchet_key = PublicKey.deserialize(body.ratchet_key)
        except InvalidKeyError as exc:
            raise InvalidMessageError(f"malformed ratchet key: {exc}") from exc
        addresses = body.addresses if body.HasField("addresses") else None
        if addresses is None:
            # protobuf keeps a field of the wrong wire type as an unknown field; libsignal's decoder refuses it.
            unknown_fields = UnknownFieldSet(body)
            if any(unknown_fields[index].field_number == ADDRESSES_FIELD for index in range(len(unknown_fields))):
                raise InvalidMessageError("SignalMessage addresses is not a byte string")
        return cls(
            version,
            ratchet_key,
            body.counter,
            body.previous_counter,
            body.ciphertext,
            data[:-MAC_SIZE],
            data[-MAC_SIZE:],
            body.pq_ratchet,
            addresses,
        )


@dataclass(frozen=True, slots=True)
class PreKeySignalMessage:
    """A parsed ``PreKeySignalMessage``: X3DH/PQXDH parameters plus the first ``SignalMessage``.

    Attributes:
        version: the message version (3 X3DH, 4 PQXDH).
        registration_id: the sender's registration id.
        prekey_id: the one-time prekey used, if any.
        signed_prekey_id: the signed prekey used.
        kyber_prekey_id: the PQ prekey used (PQXDH only).
        kyber_ciphertext: the KEM ciphertext, type byte (``0x08`` or ``0x0A``) + 1568 bytes (PQXDH only).
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
        """Parses a serialized ``PreKeySignalMessage``.

        Raises:
            InvalidVersionError: unsupported version byte.
            InvalidMessageError: truncated or malformed, or the PQ fields are half present.
        """
        if not data:
            raise InvalidMessageError("message too short")
        version = check_version(data[0])
        body = wire_pb2.PreKeySignalMessage()
        try:
            body.ParseFromString(data[1:])
        except DecodeError as exc:
            raise InvalidMessageError(f"malformed PreKeySignalMessage: {exc}") from exc
        for name in ("base_key", "identity_key", "message", "signed_pre_key_id"):
            if not body.HasField(name):
                raise InvalidMessageError(f"PreKeySignalMessage lacks {name}")
        try:
            base_key = PublicKey.deserialize(body.base_key)
            identity_key = PublicKey.deserialize(body.identity_key)
        except InvalidKeyError as exc:
            raise InvalidMessageError(f"malformed key in PreKeySignalMessage: {exc}") from exc
        has_kyber_id, has_kyber_ciphertext = body.HasField("kyber_pre_key_id"), body.HasField("kyber_ciphertext")
        if has_kyber_id != has_kyber_ciphertext:
            raise InvalidMessageError("PQ prekey id and ciphertext must come together")
        if has_kyber_id != (version == MAX_MESSAGE_VERSION):
            raise InvalidMessageError("PQXDH fields must match message version 4")
        message = SignalMessage.parse(body.message)
        if message.version != version:
            raise InvalidMessageError("inner message version differs")
        return cls(
            version,
            body.registration_id,
            body.pre_key_id if body.HasField("pre_key_id") else None,
            body.signed_pre_key_id,
            body.kyber_pre_key_id if has_kyber_id else None,
            body.kyber_ciphertext if has_kyber_ciphertext else None,
            base_key,
            identity_key,
            message,
            body.message,
        )


def encode_signal_message(
    version_prefix: bytes,
    ratchet_key: bytes,
    counter: int,
    previous_counter: int,
    ciphertext: bytes,
    pq_ratchet: bytes = b"",
    addresses: bytes = b"",
) -> bytes:
    """``version || SignalMessage`` (the bytes the MAC covers), from a serialized ratchet key.

    ``pq_ratchet`` (field 5) and ``addresses`` (field 6) are left out when empty, as libsignal leaves them out;
    field 6 goes last, where libsignal's encoder puts it.
    """
    body = wire_pb2.SignalMessage(
        ratchet_key=ratchet_key, counter=counter, previous_counter=previous_counter, ciphertext=ciphertext
    )
    if pq_ratchet:
        body.pq_ratchet = pq_ratchet
    serialized = version_prefix + body.SerializeToString()
    if addresses:
        serialized += pb.field_bytes(ADDRESSES_FIELD, addresses)
    return serialized


def service_id_binary(name: str) -> bytes | None:
    """A protocol address name as libsignal's 17-byte fixed-width service id, or None if it is not one."""
    match = _SERVICE_ID.fullmatch(name)
    if match is None:
        return None
    kind = _PNI_KIND if match.group(1) else _ACI_KIND
    return bytes((kind,)) + bytes.fromhex("".join(match.groups()[1:]))


def encode_addresses(sender: tuple[str, int], recipient: tuple[str, int]) -> bytes | None:
    """``SignalMessage`` field 6 for two ``(name, device id)`` addresses, or None when libsignal would write none.

    That is when a name is not a service id, or (never with libsignal's own device ids, 1..127) a device id
    does not fit its byte.
    """
    parts = []
    for name, device_id in (sender, recipient):
        service_id = service_id_binary(name)
        if service_id is None or not 0 <= device_id <= 0xFF:
            return None
        parts.append(service_id + bytes((device_id,)))
    return b"".join(parts)


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
    body = wire_pb2.PreKeySignalMessage(
        registration_id=registration_id,
        signed_pre_key_id=signed_prekey_id,
        base_key=base_key.serialize(),
        identity_key=identity_key.serialize(),
        message=message,
    )
    if prekey_id is not None:
        body.pre_key_id = prekey_id
    if kyber_prekey_id is not None and kyber_ciphertext is not None:
        body.kyber_pre_key_id = kyber_prekey_id
        body.kyber_ciphertext = kyber_ciphertext
    return version_byte(version) + body.SerializeToString()
