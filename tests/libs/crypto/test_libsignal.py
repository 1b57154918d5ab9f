"""Interop with the real libsignal (@signalapp/libsignal-client, pinned in libsignal/package.json).

The peer is ``libsignal/peer.js`` under Node, a subprocess spoken to in JSON lines; ``make setup`` installs its
node_modules. Full one-to-one sessions need the SPQR ratchet (libsignal runs it on every session since 0.83),
which lives in ``_spqr/``; these tests cover what does not depend on it: Kyber1024 keys and their signatures
both ways, the Kyber1024 ciphertext libsignal puts in a PQXDH prekey message for our bundle, sender-key
messages both ways (in order and out of order), and safety numbers (versions 1 and 2) both ways.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley_crypto import (
    Fingerprint,
    IdentityKeyPair,
    InvalidSignatureError,
    KemKeyPair,
    KemPublicKey,
    PreKeyBundle,
    ProtocolAddress,
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

PEER_DIR = Path(__file__).resolve().parent / "libsignal"
INSTALLED = PEER_DIR / "node_modules" / "@signalapp" / "libsignal-client" / "package.json"


class LibsignalPeer:
    """The Node process: one request, one answer."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def call(self, op: str, **fields: Any) -> Any:
        """Sends a request and returns its ``ok`` value.

        Raises:
            RuntimeError: libsignal raised; the message is its error text.
        """
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        answer = json.loads(self._process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["ok"]


@pytest.fixture(scope="module")
def peer() -> Iterator[LibsignalPeer]:
    """A libsignal device, or a skip naming what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed and `make setup` could not install it (needs root and apt-get)")
    if not INSTALLED.exists():
        pytest.skip(f"{INSTALLED.parent} is missing: run `make setup` (npm ci in {PEER_DIR})")
    process = subprocess.Popen(  # noqa: S603 - Node on PATH running a script from this repository
        [node, str(PEER_DIR / "peer.js")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PEER_DIR
    )
    try:
        yield LibsignalPeer(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def test_libsignal_reads_our_kyber1024_public_key(peer: LibsignalPeer) -> None:
    serialized = KemKeyPair.generate().public_key.serialize()
    assert serialized[0] == 0x08
    assert bytes.fromhex(peer.call("kem_public_key", key=serialized.hex())) == serialized


def test_libsignal_refuses_mlkem1024_keys_which_is_why_kyber1024_is_the_default(peer: LibsignalPeer) -> None:
    with pytest.raises(RuntimeError, match="bad KEM key type"):
        peer.call("kem_public_key", key=KemKeyPair.generate(0x0A).public_key.serialize().hex())


def test_libsignal_verifies_our_signed_kyber_prekey(peer: LibsignalPeer) -> None:
    identity = IdentityKeyPair.generate()
    record = generate_kyber_prekey(identity, 7, timestamp=0)
    fields = {
        "identity_key": identity.public_key.serialize().hex(),
        "message": record.key_pair.public_key.serialize().hex(),
    }
    assert peer.call("verify", signature=record.signature.hex(), **fields) is True
    forged = bytes((record.signature[0] ^ 1,)) + record.signature[1:]
    assert peer.call("verify", signature=forged.hex(), **fields) is False


def test_we_read_libsignals_kyber_prekey_and_verify_its_signature(peer: LibsignalPeer) -> None:
    identity_key = bytes.fromhex(peer.call("identity")["identity_key"])
    prekey = peer.call("kyber_prekey")
    public = bytes.fromhex(prekey["public_key"])
    secret = bytes.fromhex(prekey["secret_key"])
    assert (len(public), len(secret)) == (1569, 3169)
    assert verify_signature(identity_key, public, bytes.fromhex(prekey["signature"]))
    assert not verify_signature(
        identity_key, public[:-1] + bytes((public[-1] ^ 1,)), bytes.fromhex(prekey["signature"])
    )
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


def _session_arguments(name: str, bundle: PreKeyBundle) -> dict[str, object]:
    """The harness's ``start_session`` arguments for ``bundle`` (with one-time and Kyber prekeys), sending "hello"."""
    assert bundle.prekey is not None
    assert bundle.kyber_prekey is not None
    assert bundle.kyber_prekey_signature is not None
    return {
        "name": name,
        "device_id": bundle.device_id,
        "registration_id": bundle.registration_id,
        "prekey_id": bundle.prekey_id,
        "prekey": bundle.prekey.serialize().hex(),
        "signed_prekey_id": bundle.signed_prekey_id,
        "signed_prekey": bundle.signed_prekey.serialize().hex(),
        "signed_prekey_signature": bundle.signed_prekey_signature.hex(),
        "identity_key": bundle.identity_key.serialize().hex(),
        "kyber_prekey_id": bundle.kyber_prekey_id,
        "kyber_prekey": bundle.kyber_prekey.serialize().hex(),
        "kyber_prekey_signature": bundle.kyber_prekey_signature.hex(),
        "plaintext": b"hello".hex(),
    }


def test_libsignal_encapsulates_to_our_kyber_prekey_in_a_pqxdh_prekey_message(peer: LibsignalPeer) -> None:
    device = make_device("parley")
    bundle = device.bundle()
    assert bundle.prekey is not None
    assert bundle.kyber_prekey is not None
    assert bundle.kyber_prekey_signature is not None
    message = peer.call("start_session", **_session_arguments("parley", bundle))
    assert message["type"] == 3  # libsignal's PreKey message type
    parsed = PreKeySignalMessage.parse(bytes.fromhex(message["body"]))
    assert parsed.version == 4
    assert parsed.kyber_prekey_id == bundle.kyber_prekey_id
    assert parsed.kyber_ciphertext is not None
    assert parsed.kyber_ciphertext[0] == 0x08
    assert len(parsed.kyber_ciphertext) == 1569
    secret_key = device.store.kyber_prekeys[1].key_pair.private_key
    assert _is_valid_encapsulation(secret_key, parsed.kyber_ciphertext[1:])
    tampered = parsed.kyber_ciphertext[1:-1] + bytes((parsed.kyber_ciphertext[-1] ^ 1,))
    assert not _is_valid_encapsulation(secret_key, tampered)


def test_libsignal_refuses_a_bundle_whose_kyber_signature_is_forged(peer: LibsignalPeer) -> None:
    device = make_device("parley")
    bundle = device.bundle()
    assert bundle.prekey is not None
    assert bundle.kyber_prekey is not None
    assert bundle.kyber_prekey_signature is not None
    with pytest.raises(RuntimeError, match="signature"):
        peer.call(
            "start_session", **{**_session_arguments("forged", bundle), "kyber_prekey_signature": bytes(64).hex()}
        )


LIBSIGNAL_SENDER = ProtocolAddress("libsignal", 1)


def test_libsignal_sender_key_messages_decrypt_here_in_and_out_of_order(peer: LibsignalPeer) -> None:
    group = uuid.uuid4()
    device = make_device("parley")
    distribution = bytes.fromhex(peer.call("sender_key_distribution", distribution_id=str(group)))
    process_sender_key_distribution_message(device.store, LIBSIGNAL_SENDER, distribution)
    texts = [b"group %d" % i for i in range(6)]
    messages = [bytes.fromhex(peer.call("group_encrypt", distribution_id=str(group), plaintext=t.hex())) for t in texts]
    for index in (0, 3, 1, 5, 2, 4):
        assert group_decrypt(device.store, LIBSIGNAL_SENDER, messages[index]) == texts[index]
    fresh = bytes.fromhex(peer.call("group_encrypt", distribution_id=str(group), plaintext=b"last".hex()))
    with pytest.raises(InvalidSignatureError):
        group_decrypt(device.store, LIBSIGNAL_SENDER, fresh[:-1] + bytes((fresh[-1] ^ 1,)))
    assert group_decrypt(device.store, LIBSIGNAL_SENDER, fresh) == b"last"


def test_our_sender_key_messages_decrypt_in_libsignal_in_and_out_of_order(peer: LibsignalPeer) -> None:
    group = uuid.uuid4()
    device = make_device("parley")
    distribution = create_sender_key_distribution_message(device.store, device.address, group)
    peer.call("process_distribution", name=device.address.name, message=distribution.hex())
    texts = [b"ours %d" % i for i in range(6)]
    messages = [group_encrypt(device.store, device.address, group, text) for text in texts]
    for index in (2, 0, 5, 1, 4, 3):
        assert (
            bytes.fromhex(peer.call("group_decrypt", name=device.address.name, message=messages[index].hex()))
            == texts[index]
        )
    with pytest.raises(RuntimeError):
        peer.call("group_decrypt", name=device.address.name, message=(messages[0][:-1] + b"\x00").hex())


@pytest.mark.parametrize("version", [1, 2])
def test_safety_numbers_agree_with_libsignal_both_ways(peer: LibsignalPeer, version: int) -> None:
    ours, theirs = IdentityKeyPair.generate().public_key, IdentityKeyPair.generate().public_key
    our_id, their_id = b"+14155550100", b"+14155550199"
    local = Fingerprint.create(our_id, ours, their_id, theirs, version=version)
    remote = Fingerprint.create(their_id, theirs, our_id, ours, version=version)
    as_us = peer.call(
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
    as_them = peer.call(
        "fingerprint",
        version=version,
        local_id=their_id.hex(),
        local_key=theirs.serialize().hex(),
        remote_id=our_id.hex(),
        remote_key=ours.serialize().hex(),
    )
    assert local.matches_scanned(bytes.fromhex(as_them["scannable"]))
    assert bytes.fromhex(as_them["scannable"]) == remote.scannable
