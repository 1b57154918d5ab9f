"""Pairwise sessions: setup, ratcheting, and bad input that must raise a typed error and change nothing."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from parley_crypto import (
    BadMacError,
    CiphertextMessage,
    CounterTooFarError,
    CryptoError,
    DuplicateMessageError,
    IdentityKeyPair,
    InvalidMessageError,
    InvalidSignatureError,
    InvalidVersionError,
    MessageType,
    NoSessionError,
    PqPrekeyRequiredError,
    ProtocolAddress,
    SessionCipher,
    SessionRecord,
    UnknownPreKeyError,
    UntrustedIdentityError,
    generate_kyber_prekey,
    process_prekey_bundle,
)
from parley_crypto._ratchet import MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS
from parley_crypto._wire import MAC_SIZE, PreKeySignalMessage, SignalMessage, encode_prekey_message

from .conftest import Device, make_device, pair

ADDRESSES_SIZE = 2 * (17 + 1)  # two addresses: 17-byte service id, device-id byte


def snapshot(device: Device) -> tuple[object, ...]:
    """Everything a failed operation must leave as it was, in comparable form."""
    store = device.store
    return (
        {address: record.serialize() for address, record in store.sessions.items()},
        sorted(store.prekeys),
        sorted(store.kyber_prekeys),
        dict(store.identities),
    )


@pytest.mark.parametrize("pq", [False, True], ids=["x3dh", "pqxdh"])
def test_session_setup_and_conversation(pq: bool) -> None:
    to_bob, to_alice, _, bob = pair(pq=pq)
    first = to_bob.encrypt(b"hello")
    assert first.type == MessageType.PREKEY
    assert PreKeySignalMessage.parse(first.body).version == (4 if pq else 3)
    assert to_alice.decrypt(first) == b"hello"
    assert 1 not in bob.store.prekeys, "the one-time prekey is consumed"
    reply = to_alice.encrypt(b"hi")
    assert reply.type == MessageType.WHISPER
    assert to_bob.decrypt(reply) == b"hi"
    assert to_bob.encrypt(b"next").type == MessageType.WHISPER
    for index in range(10):
        assert to_alice.decrypt(to_bob.encrypt(b"a%d" % index)) == b"a%d" % index
        assert to_bob.decrypt(to_alice.encrypt(b"b%d" % index)) == b"b%d" % index


def test_session_without_one_time_prekey() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle(one_time=False))
    message = SessionCipher(alice.store, bob.address).encrypt(b"x")
    assert PreKeySignalMessage.parse(message.body).prekey_id is None
    assert SessionCipher(bob.store, alice.address).decrypt(message) == b"x"
    assert len(bob.store.prekeys) == 5


def test_prekey_messages_repeat_until_answered_and_decrypt_in_any_order() -> None:
    to_bob, to_alice, _, _ = pair()
    messages = [to_bob.encrypt(b"m%d" % i) for i in range(4)]
    assert {message.type for message in messages} == {MessageType.PREKEY}
    for index in (3, 1, 0, 2):
        assert to_alice.decrypt(messages[index]) == b"m%d" % index


def test_bad_bundle_signature_is_rejected(alice: Device, bob: Device) -> None:
    bundle = bob.bundle()
    with pytest.raises(InvalidSignatureError):
        process_prekey_bundle(alice.store, bob.address, replace(bundle, signed_prekey_signature=bytes(64)))
    forged_pq = replace(bundle, kyber_prekey_signature=bundle.signed_prekey_signature)
    with pytest.raises(InvalidSignatureError):
        process_prekey_bundle(alice.store, bob.address, forged_pq)
    assert alice.store.sessions == {}


def test_every_flipped_byte_of_a_signal_message_fails_and_changes_nothing() -> None:
    to_bob, to_alice, _, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    to_bob.decrypt(to_alice.encrypt(b"ack"))
    message = to_bob.encrypt(b"the real message")
    before = snapshot(bob)
    for index in range(len(message.body)):
        tampered = bytearray(message.body)
        tampered[index] ^= 0xFF
        with pytest.raises(CryptoError):
            to_alice.decrypt(CiphertextMessage(MessageType.WHISPER, bytes(tampered)))
        assert snapshot(bob) == before, index
    assert to_alice.decrypt(message) == b"the real message"


@pytest.mark.parametrize("pq", [False, True], ids=["x3dh", "pqxdh"])
def test_every_flipped_byte_of_a_prekey_message_fails_and_changes_nothing(pq: bool) -> None:
    to_bob, to_alice, _, bob = pair(pq=pq)
    message = to_bob.encrypt(b"first words")
    original = PreKeySignalMessage.parse(message.body)
    before = snapshot(bob)
    saved_prekeys = dict(bob.store.prekeys)
    step = 1 if not pq else 7  # the PQ message is 1.7 kB; every 7th byte still crosses every field
    for index in range(0, len(message.body), step):
        tampered = bytearray(message.body)
        tampered[index] ^= 0xFF
        try:
            plaintext = to_alice.decrypt(CiphertextMessage(MessageType.PREKEY, bytes(tampered)))
        except CryptoError:
            assert snapshot(bob) == before, index
            continue
        # Only the registration id travels unauthenticated (as in libsignal); nothing else may change.
        changed = PreKeySignalMessage.parse(bytes(tampered))
        assert plaintext == b"first words"
        assert changed.registration_id != original.registration_id
        assert changed.message_bytes == original.message_bytes
        bob.store.sessions.clear()
        bob.store.identities.clear()
        bob.store.prekeys = dict(saved_prekeys)
    assert to_alice.decrypt(message) == b"first words"


@pytest.mark.parametrize("length", [0, 1, 5, 9, 40])
def test_truncated_messages_are_invalid(length: int) -> None:
    to_bob, to_alice, _, bob = pair()
    message = to_bob.encrypt(b"truncate me")
    before = snapshot(bob)
    with pytest.raises(InvalidMessageError):
        to_alice.decrypt(CiphertextMessage(MessageType.PREKEY, message.body[:length]))
    with pytest.raises(InvalidMessageError):
        to_alice.decrypt(CiphertextMessage(MessageType.WHISPER, message.body[:length]))
    assert snapshot(bob) == before


@pytest.mark.parametrize("first_byte", [0x23, 0x13, 0x54, 0xF4])
def test_wrong_version_raises_invalid_version(first_byte: int) -> None:
    to_bob, to_alice, _, bob = pair()
    message = to_bob.encrypt(b"v")
    before = snapshot(bob)
    with pytest.raises(InvalidVersionError):
        to_alice.decrypt(CiphertextMessage(MessageType.PREKEY, bytes((first_byte,)) + message.body[1:]))
    assert snapshot(bob) == before


def test_duplicate_is_rejected_and_changes_nothing() -> None:
    to_bob, to_alice, _, bob = pair()
    first = to_bob.encrypt(b"once")
    assert to_alice.decrypt(first) == b"once"
    to_bob.decrypt(to_alice.encrypt(b"ack"))
    second = to_bob.encrypt(b"twice?")
    assert to_alice.decrypt(second) == b"twice?"
    before = snapshot(bob)
    with pytest.raises(DuplicateMessageError):
        to_alice.decrypt(second)
    with pytest.raises(DuplicateMessageError):
        to_alice.decrypt(first)
    assert snapshot(bob) == before


def test_counter_jump_beyond_the_window_is_rejected() -> None:
    to_bob, to_alice, alice, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    to_bob.decrypt(to_alice.encrypt(b"ack"))
    record = alice.store.sessions[bob.address]
    assert record.current is not None
    record.current.sender_index = MAX_FORWARD_JUMPS + 5
    message = to_bob.encrypt(b"far future")
    before = snapshot(bob)
    with pytest.raises(CounterTooFarError):
        to_alice.decrypt(message)
    assert snapshot(bob) == before


def test_skipped_keys_are_bounded_and_oldest_evicted() -> None:
    to_bob, to_alice, _, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    to_bob.decrypt(to_alice.encrypt(b"ack"))
    early = to_bob.encrypt(b"early")
    skipped_total = MAX_MESSAGE_KEYS + 10
    for _ in range(skipped_total - 1):
        to_bob.encrypt(b"lost")
    last = to_bob.encrypt(b"last")
    assert to_alice.decrypt(last) == b"last"
    state = bob.store.sessions[ProtocolAddress("alice", 1)].current
    assert state is not None
    assert max(len(chain.skipped) for chain in state.receiver_chains) == MAX_MESSAGE_KEYS
    with pytest.raises(DuplicateMessageError):
        to_alice.decrypt(early)


def test_unknown_prekey_ids_are_rejected() -> None:
    to_bob, to_alice, _, bob = pair()
    message = to_bob.encrypt(b"x")
    del bob.store.prekeys[1]
    before = snapshot(bob)
    with pytest.raises(UnknownPreKeyError):
        to_alice.decrypt(message)
    del bob.store.signed_prekeys[1]
    with pytest.raises(UnknownPreKeyError):
        to_alice.decrypt(message)
    assert snapshot(bob) == before


def test_unknown_kyber_prekey_is_rejected() -> None:
    to_bob, to_alice, _, bob = pair(pq=True)
    message = to_bob.encrypt(b"x")
    bob.store.kyber_prekeys.clear()
    before = snapshot(bob)
    with pytest.raises(UnknownPreKeyError):
        to_alice.decrypt(message)
    assert snapshot(bob) == before


def test_replayed_one_time_prekey_in_a_new_session_is_rejected() -> None:
    to_bob, to_alice, _, bob = pair(pq=False)
    consumed = bob.store.prekeys[1].key_pair.public_key
    assert to_alice.decrypt(to_bob.encrypt(b"first")) == b"first"
    # Another initiator was handed the same one-time prekey (a directory bug, or a replayed bundle).
    carol = make_device("carol")
    bundle = replace(bob.bundle(pq=False, one_time=False), prekey_id=1, prekey=consumed)
    process_prekey_bundle(carol.store, bob.address, bundle, allow_x3dh=True)
    message = SessionCipher(carol.store, bob.address).encrypt(b"again")
    before = snapshot(bob)
    with pytest.raises(UnknownPreKeyError):
        SessionCipher(bob.store, carol.address, allow_x3dh=True).decrypt(message)
    assert snapshot(bob) == before


def test_no_session_errors() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    with pytest.raises(NoSessionError):
        SessionCipher(alice.store, bob.address).encrypt(b"x")
    with pytest.raises(NoSessionError):
        SessionCipher(alice.store, bob.address).decrypt(_whisper_from_new_pair())


def _whisper_from_new_pair() -> CiphertextMessage:
    to_bob, to_alice, _, _ = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    return to_alice.encrypt(b"for someone else")


def test_stale_session_message_fails_with_bad_mac() -> None:
    to_bob, to_alice, _, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    to_bob.decrypt(to_alice.encrypt(b"ack"))
    # A message from a session this receiver never had (e.g. one dropped from its archive).
    foreign = _whisper_from_new_pair()
    before = snapshot(bob)
    with pytest.raises(BadMacError):
        to_alice.decrypt(foreign)
    assert snapshot(bob) == before


def test_identity_change_is_detected_and_untrusted_until_accepted(alice: Device) -> None:
    bob = make_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    new_bob = make_device("bob")  # reinstalled: same address, new identity key
    new_identity = new_bob.store.get_identity_key_pair().public_key
    with pytest.raises(UntrustedIdentityError):
        process_prekey_bundle(alice.store, new_bob.address, new_bob.bundle())
    # The user accepts the new safety number: the store reports the change...
    assert alice.store.save_identity(bob.address, new_identity) is True
    # ...and the old session, which belongs to the old identity, may no longer send.
    with pytest.raises(UntrustedIdentityError):
        SessionCipher(alice.store, bob.address).encrypt(b"x")
    process_prekey_bundle(alice.store, new_bob.address, new_bob.bundle())
    message = SessionCipher(alice.store, bob.address).encrypt(b"after accepting")
    assert SessionCipher(new_bob.store, alice.address).decrypt(message) == b"after accepting"


def test_receiver_rejects_prekey_message_from_changed_identity(alice: Device, bob: Device) -> None:
    bob.store.save_identity(alice.address, IdentityKeyPair.generate().public_key)
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    message = SessionCipher(alice.store, bob.address).encrypt(b"x")
    before = snapshot(bob)
    with pytest.raises(UntrustedIdentityError):
        SessionCipher(bob.store, alice.address).decrypt(message)
    assert snapshot(bob) == before


def test_archived_session_still_decrypts_late_messages() -> None:
    to_bob, to_alice, alice, bob = pair()
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    to_bob.decrypt(to_alice.encrypt(b"ack"))
    late = to_bob.encrypt(b"sent on the old session")
    # Alice starts over from a fresh bundle (e.g. after restoring a backup).
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    fresh = to_bob.encrypt(b"sent on the new session")
    assert fresh.type == MessageType.PREKEY
    assert to_alice.decrypt(fresh) == b"sent on the new session"
    assert to_alice.decrypt(late) == b"sent on the old session"
    record = bob.store.sessions[alice.address]
    assert len(record.previous) == 1


def test_serialized_session_continues_the_conversation() -> None:
    to_bob, to_alice, alice, bob = pair(pq=True)
    to_alice.decrypt(to_bob.encrypt(b"setup"))
    pending = [to_alice.encrypt(b"p%d" % i) for i in range(3)]
    for device in (alice, bob):
        for address, record in list(device.store.sessions.items()):
            device.store.sessions[address] = SessionRecord.deserialize(record.serialize())
    assert to_bob.decrypt(pending[2]) == b"p2"
    assert to_bob.decrypt(pending[0]) == b"p0"
    assert to_alice.decrypt(to_bob.encrypt(b"after restore")) == b"after restore"
    assert to_bob.decrypt(pending[1]) == b"p1"


def test_low_order_keys_in_messages_are_invalid_messages() -> None:
    to_bob, to_alice, _, bob = pair(pq=False)
    message = to_bob.encrypt(b"x")
    parsed = PreKeySignalMessage.parse(message.body)
    zero_key = b"\x05" + bytes(32)
    before = snapshot(bob)
    with pytest.raises(InvalidMessageError):
        to_alice.decrypt(
            CiphertextMessage(MessageType.PREKEY, message.body.replace(parsed.base_key.serialize(), zero_key))
        )
    inner = parsed.message_bytes.replace(parsed.message.ratchet_key.serialize(), zero_key)
    with pytest.raises(InvalidMessageError):
        to_alice.decrypt(CiphertextMessage(MessageType.PREKEY, message.body.replace(parsed.message_bytes, inner)))
    assert snapshot(bob) == before


def test_simultaneous_initiation_converges() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    process_prekey_bundle(bob.store, alice.address, alice.bundle())
    to_bob, to_alice = SessionCipher(alice.store, bob.address), SessionCipher(bob.store, alice.address)
    from_alice, from_bob = to_bob.encrypt(b"hi bob"), to_alice.encrypt(b"hi alice")
    assert from_alice.type == from_bob.type == MessageType.PREKEY
    assert to_alice.decrypt(from_alice) == b"hi bob"
    assert to_bob.decrypt(from_bob) == b"hi alice"
    # Each side now sends on the session the other started; the archived one still receives.
    for round_number in range(3):
        assert to_alice.decrypt(to_bob.encrypt(b"a%d" % round_number)) == b"a%d" % round_number
        assert to_bob.decrypt(to_alice.encrypt(b"b%d" % round_number)) == b"b%d" % round_number
    alice_record, bob_record = alice.store.sessions[bob.address], bob.store.sessions[alice.address]
    assert alice_record.current is not None
    assert bob_record.current is not None
    assert alice_record.current.alice_base_key == bob_record.current.alice_base_key, "both use one session"


def test_new_sessions_are_version_4() -> None:
    to_bob, to_alice, _, _ = pair()
    message = to_bob.encrypt(b"x")
    assert PreKeySignalMessage.parse(message.body).version == 4
    assert to_alice.decrypt(message) == b"x"


def test_bundle_without_pq_prekey_is_refused_not_downgraded() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    before = snapshot(alice)
    with pytest.raises(PqPrekeyRequiredError):
        process_prekey_bundle(alice.store, bob.address, bob.bundle(pq=False))
    assert snapshot(alice) == before
    assert alice.store.load_session(bob.address) is None


def test_version_3_prekey_message_is_refused_unless_allowed() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle(pq=False), allow_x3dh=True)
    message = SessionCipher(alice.store, bob.address, allow_x3dh=True).encrypt(b"legacy")
    assert PreKeySignalMessage.parse(message.body).version == 3
    before = snapshot(bob)
    with pytest.raises(InvalidVersionError):
        SessionCipher(bob.store, alice.address).decrypt(message)
    assert snapshot(bob) == before
    assert SessionCipher(bob.store, alice.address, allow_x3dh=True).decrypt(message) == b"legacy"


def test_version_4_prekey_message_without_pq_ciphertext_is_refused() -> None:
    alice, bob = make_device("alice"), make_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle(pq=False), allow_x3dh=True)
    legacy = PreKeySignalMessage.parse(SessionCipher(alice.store, bob.address, allow_x3dh=True).encrypt(b"x").body)
    forged = encode_prekey_message(
        version=4,
        registration_id=legacy.registration_id,
        prekey_id=legacy.prekey_id,
        signed_prekey_id=legacy.signed_prekey_id,
        kyber_prekey_id=None,
        kyber_ciphertext=None,
        base_key=legacy.base_key,
        identity_key=legacy.identity_key,
        message=legacy.message_bytes,
    )
    with pytest.raises(InvalidMessageError):
        SessionCipher(bob.store, alice.address).decrypt(CiphertextMessage(MessageType.PREKEY, forged))


def test_kyber1024_and_mlkem1024_prekeys_both_start_sessions() -> None:
    for key_type in (0x08, 0x0A):
        alice, bob = make_device("alice"), make_device("bob")
        identity = bob.store.get_identity_key_pair()
        bob.store.kyber_prekeys.clear()
        bob.store.add_kyber_prekey(generate_kyber_prekey(identity, 1, timestamp=0, key_type=key_type), last_resort=True)
        process_prekey_bundle(alice.store, bob.address, bob.bundle())
        message = SessionCipher(alice.store, bob.address).encrypt(b"pq")
        kyber_ciphertext = PreKeySignalMessage.parse(message.body).kyber_ciphertext
        assert kyber_ciphertext is not None
        assert kyber_ciphertext[0] == key_type
        assert SessionCipher(bob.store, alice.address).decrypt(message) == b"pq"


# SignalMessage field 6, "addresses": libsignal binds sender and recipient into the messages a prekey message
# carries when both names are service ids, and refuses any message whose field 6 names other addresses.


def _aci_device(name: str) -> Device:
    device = make_device(name)
    return Device(ProtocolAddress(str(uuid.uuid4()), 1), device.store)


def _aci_pair() -> tuple[SessionCipher, SessionCipher, Device, Device]:
    """Alice and Bob named by ACIs, each cipher told its own address; Alice has processed Bob's bundle."""
    alice, bob = _aci_device("alice"), _aci_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    to_bob = SessionCipher(alice.store, bob.address, local_address=alice.address)
    to_alice = SessionCipher(bob.store, alice.address, local_address=bob.address)
    return to_bob, to_alice, alice, bob


def test_prekey_messages_bind_both_addresses_and_later_messages_do_not() -> None:
    to_bob, to_alice, alice, bob = _aci_pair()
    first = to_bob.encrypt(b"hello")
    inner = PreKeySignalMessage.parse(first.body).message
    assert inner.addresses == (
        b"\x00" + uuid.UUID(alice.address.name).bytes + b"\x01" + b"\x00" + uuid.UUID(bob.address.name).bytes + b"\x01"
    )
    assert to_alice.decrypt(first) == b"hello"
    reply = to_alice.encrypt(b"hi")
    assert SignalMessage.parse(reply.body).addresses is None
    assert to_bob.decrypt(reply) == b"hi"


def test_every_flipped_bit_of_the_addresses_fails_and_changes_nothing() -> None:
    to_bob, to_alice, _, bob = _aci_pair()
    message = to_bob.encrypt(b"bound")
    inner = PreKeySignalMessage.parse(message.body).message_bytes
    at = message.body.index(inner) + len(inner) - MAC_SIZE - ADDRESSES_SIZE
    before = snapshot(bob)
    for index in range(at, at + ADDRESSES_SIZE):
        for bit in (0x01, 0x80):
            tampered = bytearray(message.body)
            tampered[index] ^= bit
            with pytest.raises(BadMacError):
                to_alice.decrypt(CiphertextMessage(MessageType.PREKEY, bytes(tampered)))
            assert snapshot(bob) == before, index
    assert to_alice.decrypt(message) == b"bound"


def test_a_message_naming_other_addresses_is_refused_though_its_mac_is_valid() -> None:
    alice, bob = _aci_device("alice"), _aci_device("bob")
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    # Alice's device claims another sender address; everything else about the message is genuine.
    impostor = SessionCipher(alice.store, bob.address, local_address=ProtocolAddress(str(uuid.uuid4()), 1))
    message = impostor.encrypt(b"from whom?")
    before = snapshot(bob)
    with pytest.raises(BadMacError):
        SessionCipher(bob.store, alice.address, local_address=bob.address).decrypt(message)
    # Delivered to another recipient address of the same device (as libsignal, which compares both).
    with pytest.raises(BadMacError):
        SessionCipher(bob.store, alice.address, local_address=ProtocolAddress(bob.address.name, 2)).decrypt(message)
    # A receiver whose own name is no service id cannot match any addresses, so it refuses them (as libsignal).
    with pytest.raises(BadMacError):
        SessionCipher(bob.store, alice.address, local_address=ProtocolAddress("bob", 1)).decrypt(message)
    assert snapshot(bob) == before
    # A caller that does not say who it is cannot check the field: the MAC alone decides.
    assert SessionCipher(bob.store, alice.address).decrypt(message) == b"from whom?"


@pytest.mark.parametrize("names", [("alice", "bob"), None], ids=["not-service-ids", "no-local-address"])
def test_no_addresses_are_written_without_two_service_ids(names: tuple[str, str] | None) -> None:
    alice, bob = _aci_device("alice"), _aci_device("bob")
    if names is not None:
        alice = Device(ProtocolAddress(names[0], 1), alice.store)
        bob = Device(ProtocolAddress(names[1], 1), bob.store)
    process_prekey_bundle(alice.store, bob.address, bob.bundle())
    local = alice.address if names is not None else None
    message = SessionCipher(alice.store, bob.address, local_address=local).encrypt(b"x")
    assert PreKeySignalMessage.parse(message.body).message.addresses is None
    assert SessionCipher(bob.store, alice.address, local_address=bob.address).decrypt(message) == b"x"
