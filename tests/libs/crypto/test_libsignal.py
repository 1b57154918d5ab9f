"""Interop with the real libsignal (@signalapp/libsignal-client, pinned in libsignal/package.json).

The peer is ``libsignal/peer.js`` under Node, a subprocess spoken to in JSON lines (``libsignal_peer.py``);
``make setup`` installs its node_modules. These tests cover the pieces: Kyber1024 keys and their signatures both
ways, the Kyber1024 ciphertext libsignal puts in a PQXDH prekey message for our bundle, sender-key messages
both ways (in order and out of order), and safety numbers (versions 1 and 2) both ways. Whole one-to-one
sessions, SPQR included, are in ``test_libsignal_sessions.py``.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
from libs.crypto.libsignal_peer import LibsignalDevice, LibsignalError, LibsignalPeer

from parley_crypto import (
    Fingerprint,
    IdentityKeyPair,
    InvalidSignatureError,
    KemKeyPair,
    KemPublicKey,
    MessageType,
    create_sender_key_distribution_message,
    generate_kyber_prekey,
    group_decrypt,
    group_encrypt,
    process_sender_key_distribution_message,
    verify_signature,
)
from parley_crypto import _kyber1024 as kyber1024
from parley_crypto import _lattice as lattice
from parley_crypto._wire import PreKeySignalMessage

from .conftest import make_device


def test_libsignal_reads_our_kyber1024_public_key(libsignal_peer: LibsignalPeer) -> None:
    serialized = KemKeyPair.generate().public_key.serialize()
    assert serialized[0] == 0x08
    assert bytes.fromhex(libsignal_peer.call("kem_public_key", key=serialized.hex())) == serialized


def test_libsignal_refuses_mlkem1024_keys_which_is_why_kyber1024_is_the_default(libsignal_peer: LibsignalPeer) -> None:
    with pytest.raises(LibsignalError, match="bad KEM key type"):
        libsignal_peer.call("kem_public_key", key=KemKeyPair.generate(0x0A).public_key.serialize().hex())


def test_libsignal_verifies_our_signed_kyber_prekey(libsignal_peer: LibsignalPeer) -> None:
    identity = IdentityKeyPair.generate()
    record = generate_kyber_prekey(identity, 7, timestamp=0)
    fields = {
        "identity_key": identity.public_key.serialize().hex(),
        "message": record.key_pair.public_key.serialize().hex(),
    }
    assert libsignal_peer.call("verify", signature=record.signature.hex(), **fields) is True
    forged = bytes((record.signature[0] ^ 1,)) + record.signature[1:]
    assert libsignal_peer.call("verify", signature=forged.hex(), **fields) is False


def test_we_read_libsignals_kyber_prekey_and_verify_its_signature(libsignal: LibsignalDevice) -> None:
    identity_key = libsignal.identity_key.serialize()
    prekey = libsignal.kyber_prekey()
    public, secret = prekey["public_key"], prekey["secret_key"]
    assert (len(public), len(secret)) == (1569, 3169)
    assert verify_signature(identity_key, public, prekey["signature"])
    assert not verify_signature(identity_key, public[:-1] + bytes((public[-1] ^ 1,)), prekey["signature"])
    pair = KemKeyPair.deserialize_private(secret)
    assert pair.public_key == KemPublicKey.deserialize(public)
    # libsignal's key material works in our encapsulation and decapsulation.
    shared, ciphertext = pair.public_key.encapsulate()
    assert pair.decapsulate(ciphertext) == shared


def _is_valid_encapsulation(secret_key: bytes, ciphertext: bytes) -> bool:
    """Round-3 decapsulation's re-encryption check: the ciphertext is what encapsulation to the key produces."""
    params = kyber1024.PARAMS
    s_hat = lattice.decode_vector(secret_key[: params.vector_bytes], params)
    public = secret_key[params.vector_bytes : params.vector_bytes + params.public_key_bytes]
    t_hat = lattice.decode_vector(public[: params.vector_bytes], params)
    assert s_hat is not None
    assert t_hat is not None
    message = lattice.pke_decrypt(s_hat, ciphertext, params)
    coins = hashlib.sha3_512(message + hashlib.sha3_256(public).digest()).digest()[32:]
    return lattice.pke_encrypt(t_hat, public[params.vector_bytes :], message, coins, params) == ciphertext


def test_libsignal_encapsulates_to_our_kyber_prekey_in_a_pqxdh_prekey_message(libsignal: LibsignalDevice) -> None:
    device = make_device("parley")
    bundle = device.bundle()
    libsignal.process_bundle(device.address, bundle)
    (message,) = libsignal.encrypt(device.address, [b"hello"])
    assert message.type == MessageType.PREKEY
    parsed = PreKeySignalMessage.parse(message.body)
    assert parsed.version == 4
    assert parsed.kyber_prekey_id == bundle.kyber_prekey_id
    assert parsed.kyber_ciphertext is not None
    assert parsed.kyber_ciphertext[0] == 0x08
    assert len(parsed.kyber_ciphertext) == 1569
    secret_key = device.store.kyber_prekeys[1].key_pair.private_key
    assert _is_valid_encapsulation(secret_key, parsed.kyber_ciphertext[1:])
    tampered = parsed.kyber_ciphertext[1:-1] + bytes((parsed.kyber_ciphertext[-1] ^ 1,))
    assert not _is_valid_encapsulation(secret_key, tampered)


def test_libsignal_refuses_a_bundle_whose_kyber_signature_is_forged(libsignal: LibsignalDevice) -> None:
    device = make_device("parley")
    with pytest.raises(LibsignalError, match="signature"):
        libsignal.process_bundle(device.address, device.bundle(), kyber_prekey_signature=bytes(64).hex())


def test_libsignal_sender_key_messages_decrypt_here_in_and_out_of_order(libsignal: LibsignalDevice) -> None:
    group = uuid.uuid4()
    device = make_device("parley")
    process_sender_key_distribution_message(device.store, libsignal.address, libsignal.sender_key_distribution(group))
    texts = [b"group %d" % i for i in range(6)]
    messages = [libsignal.group_encrypt(group, text) for text in texts]
    for index in (0, 3, 1, 5, 2, 4):
        assert group_decrypt(device.store, libsignal.address, messages[index]) == texts[index]
    fresh = libsignal.group_encrypt(group, b"last")
    with pytest.raises(InvalidSignatureError):
        group_decrypt(device.store, libsignal.address, fresh[:-1] + bytes((fresh[-1] ^ 1,)))
    assert group_decrypt(device.store, libsignal.address, fresh) == b"last"


def test_our_sender_key_messages_decrypt_in_libsignal_in_and_out_of_order(libsignal: LibsignalDevice) -> None:
    group = uuid.uuid4()
    device = make_device("parley")
    libsignal.process_distribution(
        device.address, create_sender_key_distribution_message(device.store, device.address, group)
    )
    texts = [b"ours %d" % i for i in range(6)]
    messages = [group_encrypt(device.store, device.address, group, text) for text in texts]
    for index in (2, 0, 5, 1, 4, 3):
        assert libsignal.group_decrypt(device.address, messages[index]) == texts[index]
    with pytest.raises(LibsignalError):
        libsignal.group_decrypt(device.address, messages[0][:-1] + b"\x00")


@pytest.mark.parametrize("version", [1, 2])
def test_safety_numbers_agree_with_libsignal_both_ways(libsignal_peer: LibsignalPeer, version: int) -> None:
    ours, theirs = IdentityKeyPair.generate().public_key, IdentityKeyPair.generate().public_key
    our_id, their_id = b"+14155550100", b"+14155550199"
    local = Fingerprint.create(our_id, ours, their_id, theirs, version=version)
    remote = Fingerprint.create(their_id, theirs, our_id, ours, version=version)
    as_us = libsignal_peer.call(
        "fingerprint",
        version=version,
        local_id=our_id.hex(),
        local_key=ours.serialize().hex(),
        remote_id=their_id.hex(),
        remote_key=theirs.serialize().hex(),
    )
    assert as_us["display"] == local.display == remote.display
    assert bytes.fromhex(as_us["scannable"]) == local.scannable
    # What libsignal on the other side shows as a QR code is what our side accepts when scanned.
    as_them = libsignal_peer.call(
        "fingerprint",
        version=version,
        local_id=their_id.hex(),
        local_key=theirs.serialize().hex(),
        remote_id=our_id.hex(),
        remote_key=ours.serialize().hex(),
    )
    assert local.matches_scanned(bytes.fromhex(as_them["scannable"]))
    assert bytes.fromhex(as_them["scannable"]) == remote.scannable
