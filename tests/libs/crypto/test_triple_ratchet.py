"""The Double Ratchet with SPQR (libsignal's triple ratchet) through SessionCipher: field 5 on every version-4
message, SPQR epochs completing over long conversations with bursts, reordering and loss, sessions that
survive a restart through the store, and refusal of peers without SPQR."""

from __future__ import annotations

import random

import pytest

from parley_crypto import (
    BadMacError,
    CiphertextMessage,
    InMemoryProtocolStore,
    MessageType,
    SessionCipher,
    SessionRecord,
    SpqrMinimumVersionError,
)
from parley_crypto._spqr._api import _PqRatchetState
from parley_crypto._wire import PreKeySignalMessage, SignalMessage

from .conftest import pair

pytestmark = pytest.mark.timeout(300)


def signal_message(message: CiphertextMessage) -> SignalMessage:
    if message.type == MessageType.PREKEY:
        return PreKeySignalMessage.parse(message.body).message
    return SignalMessage.parse(message.body)


def spqr_epoch(store: InMemoryProtocolStore, cipher: SessionCipher) -> int:
    record = store.load_session(cipher._address)
    assert record is not None
    assert record.current is not None
    chain = _PqRatchetState.from_proto(record.current.pq_ratchet_state).chain
    return 0 if chain is None else chain.current_epoch


def test_every_v4_message_carries_spqr_and_v3_none() -> None:
    to_bob, to_alice, _, _ = pair()
    for i in range(5):
        sent = to_bob.encrypt(b"x")
        assert signal_message(sent).pq_ratchet[:1] == b"\x01"  # SPQR version 1
        assert to_alice.decrypt(sent) == b"x"
        reply = to_alice.encrypt(bytes([i]))
        assert signal_message(reply).pq_ratchet[:1] == b"\x01"
        assert to_bob.decrypt(reply) == bytes([i])
    to_bob3, to_alice3, _, _ = pair(pq=False)
    sent = to_bob3.encrypt(b"x")
    assert signal_message(sent).pq_ratchet == b""
    assert to_alice3.decrypt(sent) == b"x"


def test_long_conversation_with_bursts_reordering_and_loss_completes_epochs() -> None:
    rng = random.Random(11)
    to_bob, to_alice, alice, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"hello"))
    count = 0
    for turn in range(100):
        sender, receiver = (to_bob, to_alice) if turn % 2 == 0 else (to_alice, to_bob)
        burst = [(sender.encrypt(f"{turn}.{i}".encode()), f"{turn}.{i}".encode()) for i in range(rng.randint(1, 7))]
        rng.shuffle(burst)
        if len(burst) > 2:
            burst.pop()  # lost on the way
        for message, plaintext in burst:
            assert receiver.decrypt(message) == plaintext
            count += 1
    assert count >= 150
    assert spqr_epoch(alice.store, to_bob) >= 2
    assert spqr_epoch(bob.store, to_alice) >= 2


def test_a_restarted_device_continues_from_its_stored_record() -> None:
    to_bob, to_alice, alice, bob = pair()
    for i in range(30):
        assert to_alice.decrypt(to_bob.encrypt(b"a%d" % i)) == b"a%d" % i
        assert to_bob.decrypt(to_alice.encrypt(b"b%d" % i)) == b"b%d" % i
    # Bob's device restarts: everything it keeps is the serialized record (and its identity).
    saved = bob.store.load_session(alice.address)
    assert saved is not None
    fresh = InMemoryProtocolStore(bob.store.get_identity_key_pair(), bob.store.get_local_registration_id())
    fresh.store_session(alice.address, SessionRecord.deserialize(saved.serialize()))
    restarted = SessionCipher(fresh, alice.address)
    for i in range(30):
        assert restarted.decrypt(to_bob.encrypt(b"c%d" % i)) == b"c%d" % i
        assert to_bob.decrypt(restarted.encrypt(b"d%d" % i)) == b"d%d" % i
    assert spqr_epoch(fresh, restarted) >= 1


def test_a_peer_without_spqr_is_refused_with_minimum_version() -> None:
    to_bob, to_alice, _, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    # Bob's side as a pre-SPQR implementation would run it: no SPQR state, so no field 5.
    record = bob.store.load_session(to_alice._address)
    assert record is not None
    assert record.current is not None
    record.current.pq_ratchet_state = b""
    bob.store.store_session(to_alice._address, record)
    reply = to_alice.encrypt(b"without spqr")
    assert signal_message(reply).pq_ratchet == b""
    with pytest.raises(SpqrMinimumVersionError, match="Minimum version"):
        to_bob.decrypt(reply)


def test_any_change_to_field_5_fails_authentication() -> None:
    to_bob, to_alice, _, _ = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    reply = to_alice.encrypt(b"reply")
    parsed = signal_message(reply)
    start = reply.body.index(parsed.pq_ratchet)
    for offset in range(start, start + len(parsed.pq_ratchet), 3):
        body = bytearray(reply.body)
        body[offset] ^= 0x10
        with pytest.raises(BadMacError):
            to_bob.decrypt(CiphertextMessage(reply.type, bytes(body)))
    assert to_bob.decrypt(reply) == b"reply"
