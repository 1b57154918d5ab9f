"""Realistic sample stanzas for tests and benchmarks, here and in the services that use this library.

The samples are deterministic: the same call always gives an equal stanza (ciphertexts are derived from a
hash of their device), so they can back golden files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TypeVar

from parley_stanza._address import Address
from parley_stanza._stanza import (
    CallAction,
    CallSignal,
    ChatState,
    ChatStateKind,
    ErrorCode,
    ErrorStanza,
    Franking,
    GroupAction,
    GroupControl,
    Message,
    MessageType,
    Payload,
    PayloadKind,
    Receipt,
    ReceiptType,
    Stanza,
)

_T = TypeVar("_T")

ALICE = Address.parse("username:alice@birdy")
BOB = Address.parse("phone:+4915112345678@gatekeeper")
CAROL = Address.parse("email:carol@example.com@birdy")
TS = 1763788800123  # 2025-11-22T05:20:00.123Z

# A Signal message for a short text is ~180 bytes; a PreKeySignalMessage adds the session set-up.
SIGNAL_MESSAGE_SIZE = 180
PREKEY_MESSAGE_SIZE = 260


def fake_ciphertext(device: Address, size: int) -> bytes:
    """Deterministic stand-in bytes for one device's ciphertext.

    Args:
        device: the device the ciphertext is for; different devices get different bytes.
        size: number of bytes.

    Returns:
        ``size`` pseudo-random bytes.
    """
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{device}#{counter}".encode()).digest()
        counter += 1
    return out[:size]


def sample_message(devices: int = 2, *, franked: bool = False) -> Message:
    """A chat message from Alice's device 1 to Bob, with ``devices`` payloads.

    The first payload is for Alice's own device 2 (a prekey message), the rest for Bob's devices.

    Args:
        devices: number of payloads, at least 1.
        franked: whether to add a franking commitment.

    Returns:
        The message.
    """
    targets = [ALICE.with_device(2), *(BOB.with_device(n) for n in range(1, devices))][:devices]
    payloads = tuple(
        Payload.of(
            device,
            PayloadKind.PREKEY if index == 0 else PayloadKind.MESSAGE,
            fake_ciphertext(device, PREKEY_MESSAGE_SIZE if index == 0 else SIGNAL_MESSAGE_SIZE),
        )
        for index, device in enumerate(targets)
    )
    return Message(
        id="0b6f7c1e-5d0a-4a55-9a43-3f2d1c9e8b10",
        sender=ALICE.with_device(1),
        recipient=BOB,
        ts=TS,
        type=MessageType.CHAT,
        payloads=payloads,
        franking=Franking(hashlib.sha256(b"commitment").digest()) if franked else None,
        receipt_requested=True,
    )


def sample_stanzas() -> dict[str, Stanza]:
    """One sample of every stanza form, keyed by a short name used for example and golden files.

    Returns:
        Name to stanza.
    """
    bob_phone = BOB.with_device(1)
    return {
        "message-chat": sample_message(2),
        "message-group": Message(
            id="01JDB4Z3K0G6W3M6X5YQ2N8R7T",
            sender=CAROL.with_device(3),
            recipient=None,
            ts=TS,
            type=MessageType.GROUP,
            payloads=tuple(
                Payload.of(device, PayloadKind.SENDER_KEY, fake_ciphertext(device, 120))
                for device in (ALICE.with_device(1), bob_phone)
            ),
            group="hiking-club_2025",
            franking=Franking(hashlib.sha256(b"c").digest(), hashlib.sha256(b"stamp").digest()),
        ),
        "message-system": Message(
            id="sys-1",
            sender=BOB.with_device(1),
            recipient=ALICE,
            ts=TS,
            type=MessageType.SYSTEM,
            payloads=(Payload.of(ALICE.with_device(1), PayloadKind.MESSAGE, b"\x01" * 48),),
        ),
        "receipt-read": Receipt(
            id="r-77",
            sender=bob_phone,
            recipient=ALICE,
            ts=TS + 5000,
            type=ReceiptType.READ,
            message_ids=("0b6f7c1e-5d0a-4a55-9a43-3f2d1c9e8b10", "m-2", "m-3"),
        ),
        "receipt-delivery": Receipt(
            id="r-78",
            sender=bob_phone,
            recipient=ALICE,
            ts=TS + 900,
            type=ReceiptType.DELIVERY,
            message_ids=("0b6f7c1e-5d0a-4a55-9a43-3f2d1c9e8b10",),
        ),
        "chatstate-typing": ChatState(id="cs-1", sender=bob_phone, recipient=ALICE, ts=TS, state=ChatStateKind.TYPING),
        "chatstate-group-paused": ChatState(
            id="cs-2", sender=bob_phone, recipient=None, ts=TS, state=ChatStateKind.PAUSED, group="hiking-club_2025"
        ),
        "error": ErrorStanza(
            id="e-1",
            recipient=ALICE.with_device(1),
            ts=TS,
            ref="0b6f7c1e-5d0a-4a55-9a43-3f2d1c9e8b10",
            code=ErrorCode.RECIPIENT_UNAVAILABLE,
            text="this user cannot be found",
        ),
        "group-control": GroupControl(
            id="g-1",
            sender=CAROL.with_device(3),
            ts=TS,
            group="hiking-club_2025",
            action=GroupAction.ADD,
            members=(ALICE, BOB),
        ),
        "call-offer": CallSignal(
            id="c-1",
            sender=ALICE.with_device(1),
            recipient=BOB,
            ts=TS,
            call_id="call-5f1c",
            action=CallAction.OFFER,
            payloads=(Payload.of(bob_phone, PayloadKind.MESSAGE, fake_ciphertext(bob_phone, 96)),),
        ),
    }


def rebuild(value: _T) -> _T:
    """Rebuilds a stanza (or any value inside one) through its constructors, all the way down.

    The decoder builds objects without running their constructors; a test that rebuilds what it decoded and
    compares proves the decoder checked everything the constructors check.

    Args:
        value: a stanza, a part of one, or a tuple of them.

    Returns:
        An equal value, built by the constructors.

    Raises:
        StanzaError: a constructor refuses a value the decoder let through.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {field.name: rebuild(getattr(value, field.name)) for field in dataclasses.fields(value) if field.init}
        return type(value)(**fields)
    if isinstance(value, tuple):
        return type(value)(rebuild(item) for item in value)
    return value
