"""Sender keys: distribution, group encryption, out-of-order delivery, forgery and replay."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_crypto import (
    CounterTooFarError,
    CryptoError,
    DuplicateMessageError,
    IdentityKeyPair,
    InMemoryProtocolStore,
    InvalidMessageError,
    InvalidSignatureError,
    NoSessionError,
    ProtocolAddress,
    SenderKeyRecord,
    create_sender_key_distribution_message,
    group_decrypt,
    group_encrypt,
    process_sender_key_distribution_message,
)
from parley_crypto._ratchet import MAX_FORWARD_JUMPS

SENDER = ProtocolAddress("alice", 1)
GROUP = uuid.uuid4()


def _store() -> InMemoryProtocolStore:
    return InMemoryProtocolStore(IdentityKeyPair.generate(), 1)


def _group(members: int = 2) -> tuple[InMemoryProtocolStore, list[InMemoryProtocolStore]]:
    sender = _store()
    distribution = create_sender_key_distribution_message(sender, SENDER, GROUP)
    receivers = [_store() for _ in range(members)]
    for receiver in receivers:
        process_sender_key_distribution_message(receiver, SENDER, distribution)
    return sender, receivers


def _snapshot(store: InMemoryProtocolStore) -> dict[object, bytes]:
    return {key: record.serialize() for key, record in store.sender_keys.items()}


def test_one_encryption_reaches_every_member_in_any_order() -> None:
    sender, receivers = _group(3)
    messages = [group_encrypt(sender, SENDER, GROUP, b"g%d" % i) for i in range(6)]
    assert messages[0][0] == 0x33
    for receiver in receivers:
        for index in (5, 0, 3, 1, 4, 2):
            assert group_decrypt(receiver, SENDER, messages[index]) == b"g%d" % index


def test_duplicate_and_replayed_distribution_do_not_rewind() -> None:
    sender, (receiver,) = _group(1)
    message = group_encrypt(sender, SENDER, GROUP, b"once")
    assert group_decrypt(receiver, SENDER, message) == b"once"
    process_sender_key_distribution_message(
        receiver, SENDER, create_sender_key_distribution_message(sender, SENDER, GROUP)
    )
    with pytest.raises(DuplicateMessageError):
        group_decrypt(receiver, SENDER, message)


def test_every_flipped_byte_fails_and_changes_nothing() -> None:
    sender, (receiver,) = _group(1)
    message = group_encrypt(sender, SENDER, GROUP, b"group text")
    before = _snapshot(receiver)
    for index in range(len(message)):
        tampered = bytearray(message)
        tampered[index] ^= 0xFF
        with pytest.raises(CryptoError):
            group_decrypt(receiver, SENDER, bytes(tampered))
        assert _snapshot(receiver) == before, index
    assert group_decrypt(receiver, SENDER, message) == b"group text"


def test_forged_signature_is_rejected() -> None:
    sender, (receiver,) = _group(1)
    message = group_encrypt(sender, SENDER, GROUP, b"x")
    forged = message[:-64] + IdentityKeyPair.generate().sign(message[:-64])
    with pytest.raises(InvalidSignatureError):
        group_decrypt(receiver, SENDER, forged)


def test_unknown_sender_or_group_is_no_session() -> None:
    sender, _ = _group(1)
    message = group_encrypt(sender, SENDER, GROUP, b"x")
    with pytest.raises(NoSessionError):
        group_decrypt(_store(), SENDER, message)
    with pytest.raises(NoSessionError):
        group_encrypt(_store(), SENDER, GROUP, b"x")


def test_iteration_jump_beyond_the_window_is_rejected() -> None:
    sender, (receiver,) = _group(1)
    sender.sender_keys[(SENDER, GROUP)].states[-1].iteration = MAX_FORWARD_JUMPS + 1
    message = group_encrypt(sender, SENDER, GROUP, b"far")
    with pytest.raises(CounterTooFarError):
        group_decrypt(receiver, SENDER, message)


@pytest.mark.parametrize("message", [b"", b"\x33", b"\x33" + bytes(64), b"\x23" + bytes(80)])
def test_malformed_messages_raise_invalid_message(message: bytes) -> None:
    _, (receiver,) = _group(1)
    with pytest.raises(InvalidMessageError):
        group_decrypt(receiver, SENDER, message)
    with pytest.raises(InvalidMessageError):
        process_sender_key_distribution_message(receiver, SENDER, message)


def test_record_round_trip_and_golden_v1() -> None:
    sender, (receiver,) = _group(1)
    for store in (sender, receiver):
        record = store.sender_keys[(SENDER, GROUP)]
        assert SenderKeyRecord.deserialize(record.serialize()).serialize() == record.serialize()
    golden = json.loads((Path(__file__).parent / "golden" / "state_v1.json").read_text())["sender_key"]
    store = _store()
    group = uuid.UUID(golden["group"])
    store.store_sender_key(SENDER, group, SenderKeyRecord.deserialize(bytes.fromhex(golden["record"])))
    assert group_decrypt(store, SENDER, bytes.fromhex(golden["message"])) == golden["plaintext"].encode()


@settings(max_examples=100, deadline=None)
@given(
    order=st.permutations(range(8)), duplicates=st.lists(st.integers(0, 7), max_size=4), drop=st.sets(st.integers(0, 7))
)
def test_any_delivery_order_with_drops_and_duplicates(order: list[int], duplicates: list[int], drop: set[int]) -> None:
    sender, (receiver,) = _group(1)
    messages = [group_encrypt(sender, SENDER, GROUP, b"m%d" % i) for i in range(8)]
    delivered: set[int] = set()
    for index in order:
        if index in drop:
            continue
        assert group_decrypt(receiver, SENDER, messages[index]) == b"m%d" % index
        delivered.add(index)
    for index in duplicates:
        if index in delivered:
            before = _snapshot(receiver)
            with pytest.raises(DuplicateMessageError):
                group_decrypt(receiver, SENDER, messages[index])
            assert _snapshot(receiver) == before
