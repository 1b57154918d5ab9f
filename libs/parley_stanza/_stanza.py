"""The typed, immutable stanzas of the ``urn:parley:stanza:1`` vocabulary.

Every stanza checks its own invariants when constructed, so an object that exists is a valid stanza and
``encode`` never fails on it. The XML names of each field are given in docs/stanza.md and in the schema
protos/stanza/v1/stanza.xsd.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from parley_stanza._address import Address
from parley_stanza._errors import InvalidStanzaError

NAMESPACE = "urn:parley:stanza:1"

MAX_TIMESTAMP = 2**63 - 1

# Ids are chosen by clients (UUIDs, ULIDs, counters); the alphabet keeps them safe in any attribute or key.
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
GROUP_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The characters XML 1.0 can carry in text at all.
_XML_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")

_E = TypeVar("_E", bound=StrEnum)


class MessageType(StrEnum):
    """What kind of conversation a message belongs to."""

    CHAT = "chat"
    GROUP = "group"
    SYSTEM = "system"


class PayloadKind(StrEnum):
    """Which Signal Protocol message a payload carries."""

    PREKEY = "prekey"  # PreKeySignalMessage: the first message of a session (X3DH or PQXDH)
    MESSAGE = "message"  # SignalMessage: a Double Ratchet message in an established session
    SENDER_KEY = "sender-key"  # SenderKeyMessage: a group message under the sender's sender key


class ReceiptType(StrEnum):
    """What a receipt confirms."""

    DELIVERY = "delivery"
    READ = "read"


class ChatStateKind(StrEnum):
    """Whether the sender is composing."""

    TYPING = "typing"
    PAUSED = "paused"


class ErrorCode(StrEnum):
    """Why a stanza was refused; the relay and providers send these back to the stanza's sender."""

    BAD_REQUEST = "bad-request"
    NOT_AUTHORIZED = "not-authorized"
    FORBIDDEN = "forbidden"
    RECIPIENT_UNAVAILABLE = "recipient-unavailable"
    RATE_LIMITED = "rate-limited"
    TOO_LARGE = "too-large"
    UNSUPPORTED = "unsupported"
    CONFLICT = "conflict"
    INTERNAL = "internal"


class GroupAction(StrEnum):
    """Reserved: the changes a group-management stanza can announce."""

    CREATE = "create"
    ADD = "add"
    REMOVE = "remove"
    LEAVE = "leave"
    UPDATE = "update"


class CallAction(StrEnum):
    """Reserved: the steps of call signalling."""

    OFFER = "offer"
    ANSWER = "answer"
    ICE = "ice"
    HANGUP = "hangup"
    BUSY = "busy"


def _check_id(value: object, what: str) -> None:
    if type(value) is not str or not ID_PATTERN.fullmatch(value):
        raise InvalidStanzaError(f"{what} must match {ID_PATTERN.pattern}: {str(value)[:64]!r}")


def _check_ts(value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP:
        raise InvalidStanzaError(f"ts must be an int in 0..2^63-1 (milliseconds since the epoch): {value!r}")


def _check_user(value: object, what: str) -> None:
    if not isinstance(value, Address):
        raise InvalidStanzaError(f"{what} must be an Address")


def _check_device(value: object, what: str) -> None:
    if not isinstance(value, Address) or value.device is None:
        raise InvalidStanzaError(f"{what} must be the Address of a device (with /device)")


def _check_bytes(value: object, what: str) -> None:
    if type(value) is not bytes or not value:
        raise InvalidStanzaError(f"{what} must be non-empty bytes")


def _check_group(value: object) -> None:
    if type(value) is not str or not GROUP_ID_PATTERN.fullmatch(value):
        raise InvalidStanzaError(f"group must match {GROUP_ID_PATTERN.pattern}: {str(value)[:64]!r}")


def _check_enum(self: object, name: str, enum: type[_E]) -> None:
    value = getattr(self, name)
    if type(value) is enum:
        return
    try:
        object.__setattr__(self, name, enum(value))
    except ValueError:
        raise InvalidStanzaError(f"{name} must be one of {[m.value for m in enum]}: {value!r}") from None


def _check_payloads(payloads: object) -> None:
    if type(payloads) is not tuple or not payloads:
        raise InvalidStanzaError("payloads must be a non-empty tuple of Payload")
    devices = set()
    for payload in payloads:
        if type(payload) is not Payload:
            raise InvalidStanzaError("payloads must be a non-empty tuple of Payload")
        devices.add(payload.device)
    if len(devices) != len(payloads):
        raise InvalidStanzaError("two payloads for the same device")


def is_base64(text: str) -> bool:
    """Whether ``text`` is standard, padded base64 (alphabet, length and padding; not the unused bits).

    This runs once per payload on the relay's hot path: deleting the alphabet with bytes.translate runs
    in C at ~0.2 us for a typical ciphertext, under half of what decoding it would cost.
    """
    length = len(text)
    if not length or length % 4 or not text.isascii():
        return False
    core = text.rstrip("=") if text[-1] == "=" else text
    if length - len(core) > 2:
        return False
    return not core.encode("ascii").translate(None, _BASE64_ALPHABET)


@dataclass(frozen=True, slots=True)
class Payload:
    """The ciphertext of one content message for one device.

    The ciphertext stays in the base64 form it travels in: relays only route it, so decoding it on every
    hop would be wasted work. Clients read the bytes through ``ciphertext``.

    Attributes:
        device: the device the ciphertext is encrypted for (a recipient's, or one of the sender's others).
        kind: which Signal Protocol message the ciphertext is.
        ciphertext_b64: the serialized Signal Protocol message in standard, padded base64.
    """

    device: Address
    kind: PayloadKind
    ciphertext_b64: str

    def __post_init__(self) -> None:
        _check_device(self.device, "payload device")
        _check_enum(self, "kind", PayloadKind)
        if type(self.ciphertext_b64) is not str or not is_base64(self.ciphertext_b64):
            raise InvalidStanzaError("payload ciphertext must be non-empty, standard, padded base64")

    @classmethod
    def of(cls, device: Address, kind: PayloadKind, ciphertext: bytes) -> Payload:
        """Builds a payload from the ciphertext bytes.

        Args:
            device: the device the ciphertext is encrypted for.
            kind: which Signal Protocol message ``ciphertext`` is.
            ciphertext: the serialized Signal Protocol message, non-empty.

        Raises:
            InvalidStanzaError: if any argument is invalid.
        """
        _check_bytes(ciphertext, "payload ciphertext")
        return cls(device, kind, binascii.b2a_base64(ciphertext, newline=False).decode("ascii"))

    @property
    def ciphertext(self) -> bytes:
        """The serialized Signal Protocol message."""
        return binascii.a2b_base64(self.ciphertext_b64)


@dataclass(frozen=True, slots=True)
class Franking:
    """The franking commitment of a message, and the relay's stamp over it once the relay has accepted it.

    Attributes:
        commitment: the sender's commitment to the plaintext (HMAC of it under the key inside the content).
        stamp: the relay's signature binding commitment, sender, recipient and time; None until stamped.
    """

    commitment: bytes
    stamp: bytes | None = None

    def __post_init__(self) -> None:
        _check_bytes(self.commitment, "franking commitment")
        if self.stamp is not None:
            _check_bytes(self.stamp, "franking stamp")


@dataclass(frozen=True, slots=True)
class Message:
    """An encrypted message: one payload per recipient device and per other device of the sender.

    Attributes:
        id: the sender's id for the message, unique per sender; the relay de-duplicates on it.
        sender: the sending device.
        recipient: the recipient user for ``chat`` and ``system`` messages; None for ``group``.
        ts: when the sender sent it, in milliseconds since the Unix epoch.
        type: chat, group or system.
        payloads: the ciphertexts, at most one per device.
        group: the group id for ``group`` messages; None otherwise.
        franking: the franking commitment, when the sender's provider franks.
        receipt_requested: whether the sender asks for delivery and read receipts.
    """

    id: str
    sender: Address
    recipient: Address | None
    ts: int
    type: MessageType
    payloads: tuple[Payload, ...]
    group: str | None = None
    franking: Franking | None = None
    receipt_requested: bool = False

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_device(self.sender, "sender")
        _check_ts(self.ts)
        _check_enum(self, "type", MessageType)
        if self.type is MessageType.GROUP:
            if self.recipient is not None:
                raise InvalidStanzaError("a group message has a group, not a recipient")
            _check_group(self.group)
        else:
            _check_user(self.recipient, "recipient")
            if self.group is not None:
                raise InvalidStanzaError(f"a {self.type.value} message has a recipient, not a group")
        _check_payloads(self.payloads)
        if self.franking is not None and type(self.franking) is not Franking:
            raise InvalidStanzaError("franking must be a Franking")
        if type(self.receipt_requested) is not bool:
            raise InvalidStanzaError("receipt_requested must be a bool")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery or read receipt for one or more messages.

    Attributes:
        id: the id of the receipt itself.
        sender: the device confirming.
        recipient: the user whose messages are confirmed.
        ts: when the receipt was sent, in milliseconds since the Unix epoch.
        type: delivery or read.
        message_ids: the ids of the confirmed messages, at least one, without repeats.
    """

    id: str
    sender: Address
    recipient: Address
    ts: int
    type: ReceiptType
    message_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_device(self.sender, "sender")
        _check_user(self.recipient, "recipient")
        _check_ts(self.ts)
        _check_enum(self, "type", ReceiptType)
        if type(self.message_ids) is not tuple or not self.message_ids:
            raise InvalidStanzaError("message_ids must be a non-empty tuple")
        for message_id in self.message_ids:
            _check_id(message_id, "receipt message id")
        if len(set(self.message_ids)) != len(self.message_ids):
            raise InvalidStanzaError("a receipt names a message id twice")


@dataclass(frozen=True, slots=True)
class ChatState:
    """A typing indicator; relays forward it to online devices and never store it.

    Attributes:
        id: the id of the stanza.
        sender: the device whose user is typing.
        recipient: the user told; None when ``group`` is set.
        ts: when it was sent, in milliseconds since the Unix epoch.
        state: typing or paused.
        group: the group the user is typing in; None in a one-to-one chat.
    """

    id: str
    sender: Address
    recipient: Address | None
    ts: int
    state: ChatStateKind
    group: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_device(self.sender, "sender")
        _check_ts(self.ts)
        _check_enum(self, "state", ChatStateKind)
        if self.group is None:
            _check_user(self.recipient, "recipient")
        elif self.recipient is not None:
            raise InvalidStanzaError("a chat state has either a recipient or a group, not both")
        else:
            _check_group(self.group)


@dataclass(frozen=True, slots=True)
class ErrorStanza:
    """Tells the sender of a stanza that it was refused, and why.

    Attributes:
        id: the id of the error stanza itself.
        recipient: the device or user whose stanza was refused.
        ts: when the error was raised, in milliseconds since the Unix epoch.
        ref: the id of the refused stanza.
        code: the machine-readable reason.
        text: a human-readable explanation, or None.
        sender: who refused it; None when it is the relay itself.
    """

    id: str
    recipient: Address
    ts: int
    ref: str
    code: ErrorCode
    text: str | None = None
    sender: Address | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_user(self.recipient, "recipient")
        _check_ts(self.ts)
        _check_id(self.ref, "ref")
        _check_enum(self, "code", ErrorCode)
        if self.text is not None and (type(self.text) is not str or not _XML_TEXT.fullmatch(self.text)):
            raise InvalidStanzaError("error text must be None or non-empty text of characters XML allows")
        if self.sender is not None:
            _check_user(self.sender, "sender")


@dataclass(frozen=True, slots=True)
class GroupControl:
    """Reserved for group management: announces a change of a group's membership or settings.

    The vocabulary and codec carry it so that providers can start to exchange it; relays of this version
    may answer it with ``ErrorCode.UNSUPPORTED``.

    Attributes:
        id: the id of the stanza.
        sender: the device announcing the change.
        ts: when it was sent, in milliseconds since the Unix epoch.
        group: the group id.
        action: what changes.
        members: the users added or removed (or the initial members on create); may be empty.
    """

    id: str
    sender: Address
    ts: int
    group: str
    action: GroupAction
    members: tuple[Address, ...] = ()

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_device(self.sender, "sender")
        _check_ts(self.ts)
        _check_group(self.group)
        _check_enum(self, "action", GroupAction)
        if type(self.members) is not tuple:
            raise InvalidStanzaError("members must be a tuple of Address")
        for member in self.members:
            _check_user(member, "member")
        if len(set(self.members)) != len(self.members):
            raise InvalidStanzaError("a member is named twice")


@dataclass(frozen=True, slots=True)
class CallSignal:
    """Reserved for call signalling: one end-to-end encrypted step of setting up or ending a call.

    Attributes:
        id: the id of the stanza.
        sender: the calling or answering device.
        recipient: the other user.
        ts: when it was sent, in milliseconds since the Unix epoch.
        call_id: the call this step belongs to.
        action: offer, answer, ice, hangup or busy.
        payloads: the encrypted signalling data, one per device.
    """

    id: str
    sender: Address
    recipient: Address
    ts: int
    call_id: str
    action: CallAction
    payloads: tuple[Payload, ...]

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_device(self.sender, "sender")
        _check_user(self.recipient, "recipient")
        _check_ts(self.ts)
        _check_id(self.call_id, "call id")
        _check_enum(self, "action", CallAction)
        _check_payloads(self.payloads)


Stanza = Message | Receipt | ChatState | ErrorStanza | GroupControl | CallSignal
"""Any stanza of the vocabulary."""
