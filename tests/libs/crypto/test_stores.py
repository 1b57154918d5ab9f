"""The in-memory stores: trust on first use, identity-change detection, prekey consumption."""

from __future__ import annotations

from parley_crypto import (
    Direction,
    IdentityKeyPair,
    InMemoryProtocolStore,
    ProtocolAddress,
    generate_kyber_prekey,
    generate_prekeys,
)

BOB = ProtocolAddress("bob", 1)


def test_trust_on_first_use_and_change_detection() -> None:
    store = InMemoryProtocolStore(IdentityKeyPair.generate(), 7)
    first, second = IdentityKeyPair.generate().public_key, IdentityKeyPair.generate().public_key
    assert store.is_trusted_identity(BOB, first, Direction.SENDING)
    assert store.save_identity(BOB, first) is False
    assert store.save_identity(BOB, first) is False
    assert store.is_trusted_identity(BOB, first, Direction.RECEIVING)
    assert not store.is_trusted_identity(BOB, second, Direction.RECEIVING)
    assert store.save_identity(BOB, second) is True
    assert store.get_identity(BOB) == second
    assert store.get_local_registration_id() == 7


def test_one_time_prekeys_are_removed_and_last_resort_pq_keys_kept() -> None:
    identity = IdentityKeyPair.generate()
    store = InMemoryProtocolStore(identity, 1)
    store.add_prekeys(generate_prekeys(10, 2))
    store.remove_prekey(10)
    assert store.load_prekey(10) is None
    assert store.load_prekey(11) is not None
    store.add_kyber_prekey(generate_kyber_prekey(identity, 1, timestamp=0), last_resort=True)
    store.add_kyber_prekey(generate_kyber_prekey(identity, 2, timestamp=0))
    store.mark_kyber_prekey_used(1)
    store.mark_kyber_prekey_used(2)
    assert store.load_kyber_prekey(1) is not None
    assert store.load_kyber_prekey(2) is None
