"""Fixtures shared by the crypto tests: devices with published prekeys, and paired sessions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from libs.crypto.libsignal_peer import LibsignalDevice, LibsignalPeer

from parley_crypto import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    PreKeyBundle,
    ProtocolAddress,
    SessionCipher,
    generate_kyber_prekey,
    generate_prekeys,
    generate_registration_id,
    generate_signed_prekey,
    process_prekey_bundle,
)


@dataclass
class Device:
    """A local device: its address and store, with one signed, five one-time and one PQ prekey published."""

    address: ProtocolAddress
    store: InMemoryProtocolStore

    def bundle(self, *, pq: bool = True, one_time: bool = True) -> PreKeyBundle:
        """The bundle the key directory would hand out for this device."""
        identity = self.store.get_identity_key_pair()
        signed = self.store.signed_prekeys[1]
        prekey = min(self.store.prekeys.values(), key=lambda record: record.id) if one_time else None
        kyber = self.store.kyber_prekeys[1] if pq else None
        return PreKeyBundle(
            registration_id=self.store.get_local_registration_id(),
            device_id=self.address.device_id,
            identity_key=identity.public_key,
            signed_prekey_id=signed.id,
            signed_prekey=signed.key_pair.public_key,
            signed_prekey_signature=signed.signature,
            prekey_id=prekey.id if prekey else None,
            prekey=prekey.key_pair.public_key if prekey else None,
            kyber_prekey_id=kyber.id if kyber else None,
            kyber_prekey=kyber.key_pair.public_key if kyber else None,
            kyber_prekey_signature=kyber.signature if kyber else None,
        )


def make_device(name: str) -> Device:
    """A fresh device named ``name``.1 with prekeys in its store."""
    identity = IdentityKeyPair.generate()
    store = InMemoryProtocolStore(identity, generate_registration_id())
    store.add_signed_prekey(generate_signed_prekey(identity, 1, timestamp=0))
    store.add_prekeys(generate_prekeys(1, 5))
    store.add_kyber_prekey(generate_kyber_prekey(identity, 1, timestamp=0), last_resort=True)
    return Device(ProtocolAddress(name, 1), store)


def pair(*, pq: bool = True) -> tuple[SessionCipher, SessionCipher, Device, Device]:
    """Alice with a session to Bob (from Bob's bundle) and the two ciphers: Alice's to Bob, Bob's to Alice.

    ``pq=False`` starts a version-3 (X3DH) session, with X3DH explicitly allowed on both sides.
    """
    alice, bob = make_device("alice"), make_device("bob")
    legacy = not pq
    process_prekey_bundle(alice.store, bob.address, bob.bundle(pq=pq), allow_x3dh=legacy)
    return (
        SessionCipher(alice.store, bob.address, allow_x3dh=legacy),
        SessionCipher(bob.store, alice.address, allow_x3dh=legacy),
        alice,
        bob,
    )


@pytest.fixture
def alice() -> Device:
    """A fresh device "alice"."""
    return make_device("alice")


@pytest.fixture
def bob() -> Device:
    """A fresh device "bob"."""
    return make_device("bob")


@pytest.fixture
def libsignal(libsignal_peer: LibsignalPeer) -> LibsignalDevice:
    """A fresh libsignal device (its name a new ACI) in the shared Node process."""
    return libsignal_peer.device()
