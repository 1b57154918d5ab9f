"""Wire compatibility with python-axolotl, an independent Signal Protocol implementation, in both directions.

The peer runs in .venv-interop (built by ``make setup``) as a subprocess speaking JSON lines; see
interop/axolotl_peer.py. python-axolotl speaks X3DH (message version 3), so these sessions are X3DH ones.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.signal.v1 import wire_pb2
from parley_crypto import (
    CiphertextMessage,
    IdentityKeyPair,
    KeyPair,
    MessageType,
    PreKeyBundle,
    ProtocolAddress,
    PublicKey,
    SessionCipher,
    create_sender_key_distribution_message,
    group_encrypt,
    process_prekey_bundle,
    process_sender_key_distribution_message,
    verify_signature,
)
from parley_crypto import _protobuf as pb
from parley_crypto._kdf import aes_cbc_decrypt
from parley_crypto._sender_keys import _message_key, _message_seed
from parley_crypto._wire import SignalMessage

from .conftest import Device, make_device

REPO = Path(__file__).resolve().parents[3]
INTEROP_PYTHON = REPO / ".venv-interop" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "interop" / "axolotl_peer.py"
PEER_NAME = "axolotl"


class AxolotlPeer:
    """The JSON-lines client of one axolotl peer process."""

    def __init__(self) -> None:
        if not INTEROP_PYTHON.exists():
            pytest.fail(f"{INTEROP_PYTHON} is missing: run `make setup` (or `make interop-venv`)")
        self._process = subprocess.Popen(  # noqa: S603 - fixed interpreter and script from this repository
            [str(INTEROP_PYTHON), str(PEER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = ProtocolAddress(PEER_NAME, 1)

    def call(self, op: str, **request: Any) -> dict[str, Any]:
        """Sends one request and returns the answer."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        assert line, "axolotl peer exited"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def encrypt(self, plaintext: bytes, to: str = "parley") -> CiphertextMessage:
        """The peer encrypts to our device."""
        answer = self.call("encrypt", name=to, plaintext=plaintext.hex())
        return CiphertextMessage(MessageType(answer["type"]), bytes.fromhex(answer["body"]))

    def decrypt(self, message: CiphertextMessage, sender: str = "parley") -> bytes:
        """The peer decrypts a message from our device; fails the test on its error."""
        answer = self.call("decrypt", name=sender, type=int(message.type), body=message.body.hex())
        assert "error" not in answer, answer
        return bytes.fromhex(answer["plaintext"])

    def close(self) -> None:
        """Ends the process."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)


@pytest.fixture
def peer() -> Iterator[AxolotlPeer]:
    """A fresh axolotl device."""
    process = AxolotlPeer()
    yield process
    process.close()


def _peer_bundle(peer: AxolotlPeer) -> PreKeyBundle:
    answer = peer.call("init", spk_id=7, prekey_id=31337)
    return PreKeyBundle(
        registration_id=answer["registration_id"],
        device_id=1,
        identity_key=PublicKey.deserialize(bytes.fromhex(answer["identity_key"])),
        signed_prekey_id=7,
        signed_prekey=PublicKey.deserialize(bytes.fromhex(answer["signed_prekey"])),
        signed_prekey_signature=bytes.fromhex(answer["signed_prekey_signature"]),
        prekey_id=31337,
        prekey=PublicKey.deserialize(bytes.fromhex(answer["prekey"])),
    )


def _give_peer_our_bundle(peer: AxolotlPeer, device: Device) -> None:
    bundle = device.bundle(pq=False)
    assert bundle.prekey is not None
    peer.call(
        "process_bundle",
        name="parley",
        registration_id=bundle.registration_id,
        prekey_id=bundle.prekey_id,
        prekey=bundle.prekey.serialize().hex(),
        signed_prekey_id=bundle.signed_prekey_id,
        signed_prekey=bundle.signed_prekey.serialize().hex(),
        signed_prekey_signature=bundle.signed_prekey_signature.hex(),
        identity_key=bundle.identity_key.serialize().hex(),
    )


def _conversation(ours: SessionCipher, peer: AxolotlPeer, *, rounds: int) -> None:
    """Alternating bursts with out-of-order delivery on both sides: every burst is a new DH ratchet step."""
    for round_number in range(rounds):
        burst = [b"ours %d.%d" % (round_number, i) for i in range(3)]
        sent = [ours.encrypt(text) for text in burst]
        for index in (2, 0, 1):
            assert peer.decrypt(sent[index]) == burst[index]
        replies = [b"theirs %d.%d" % (round_number, i) for i in range(3)]
        received = [peer.encrypt(text) for text in replies]
        for index in (1, 2, 0):
            assert ours.decrypt(received[index]) == replies[index]


def test_axolotl_starts_session_and_we_continue_it(peer: AxolotlPeer) -> None:
    device = make_device("parley")
    _give_peer_our_bundle(peer, device)
    ours = SessionCipher(device.store, peer.address, allow_x3dh=True)
    first = [peer.encrypt(b"hello %d" % i) for i in range(3)]
    assert all(message.type == MessageType.PREKEY for message in first)
    # Out of order from the very first prekey message on.
    assert ours.decrypt(first[2]) == b"hello 2"
    assert ours.decrypt(first[0]) == b"hello 0"
    assert ours.decrypt(first[1]) == b"hello 1"
    assert 1 not in device.store.prekeys, "the used one-time prekey is removed"
    _conversation(ours, peer, rounds=4)


def test_we_start_session_and_axolotl_continues_it(peer: AxolotlPeer) -> None:
    device = make_device("parley")
    process_prekey_bundle(device.store, peer.address, _peer_bundle(peer), allow_x3dh=True)
    ours = SessionCipher(device.store, peer.address, allow_x3dh=True)
    first = [ours.encrypt(b"hi %d" % i) for i in range(3)]
    assert all(message.type == MessageType.PREKEY for message in first)
    assert first[0].body[0] >> 4 == 3
    assert peer.decrypt(first[1]) == b"hi 1"
    assert peer.decrypt(first[0]) == b"hi 0"
    reply = peer.encrypt(b"welcome")
    assert reply.type == MessageType.WHISPER
    assert ours.decrypt(reply) == b"welcome"
    # The late prekey message still decrypts on the peer after the session moved on.
    assert peer.decrypt(first[2]) == b"hi 2"
    assert ours.encrypt(b"acknowledged").type == MessageType.WHISPER
    _conversation(ours, peer, rounds=4)


def test_long_gap_of_skipped_messages_in_both_directions(peer: AxolotlPeer) -> None:
    device = make_device("parley")
    process_prekey_bundle(device.store, peer.address, _peer_bundle(peer), allow_x3dh=True)
    ours = SessionCipher(device.store, peer.address, allow_x3dh=True)
    assert peer.decrypt(ours.encrypt(b"start")) == b"start"
    theirs = [peer.encrypt(b"t%d" % i) for i in range(40)]
    assert ours.decrypt(theirs[39]) == b"t39"
    assert ours.decrypt(theirs[3]) == b"t3"
    mine = [ours.encrypt(b"m%d" % i) for i in range(40)]
    assert peer.decrypt(mine[39]) == b"m39"
    assert peer.decrypt(mine[0]) == b"m0"
    assert ours.decrypt(theirs[0]) == b"t0"


def test_axolotl_signatures_verify_here_and_ours_there(peer: AxolotlPeer) -> None:
    identity = PublicKey.deserialize(bytes.fromhex(peer.call("init", spk_id=1, prekey_id=1)["identity_key"]))
    for index in range(8):
        message = b"prekey %d" % index
        signature = bytes.fromhex(peer.call("sign", message=message.hex())["signature"])
        assert verify_signature(identity.serialize(), message, signature)
        assert not verify_signature(identity.serialize(), message + b"!", signature)
    # Several of our keys, so both Edwards sign bits are exercised.
    for _ in range(8):
        pair = IdentityKeyPair.generate() if _ % 2 else KeyPair.generate()
        signature = pair.sign(b"our prekey")
        public = pair.public_key.serialize().hex()
        assert peer.call("verify", public=public, message=b"our prekey".hex(), signature=signature.hex())["valid"]
        assert not peer.call("verify", public=public, message=b"other".hex(), signature=signature.hex())["valid"]


def test_axolotl_rejects_our_tampered_message(peer: AxolotlPeer) -> None:
    device = make_device("parley")
    process_prekey_bundle(device.store, peer.address, _peer_bundle(peer), allow_x3dh=True)
    ours = SessionCipher(device.store, peer.address, allow_x3dh=True)
    assert peer.decrypt(ours.encrypt(b"first")) == b"first"
    assert ours.decrypt(peer.encrypt(b"ack")) == b"ack"
    message = ours.encrypt(b"second")
    tampered = bytearray(message.body)
    tampered[-1] ^= 1
    answer = peer.call("decrypt", name="parley", type=2, body=bytes(tampered).hex())
    assert answer.get("error") == "InvalidMessageException"
    assert peer.decrypt(message) == b"second"


# Sender keys. python-axolotl writes the first, legacy layout of the sender-key messages (fields: 1 key id,
# 2 iteration, 3 chain key or ciphertext, 4 signing key), which libsignal later replaced by the layout we
# speak (a distribution uuid first, then chain id, iteration, ...). The key schedule, the AES-CBC ciphertext
# and the XEdDSA signature are unchanged between the two, and that is what these tests prove in both
# directions: the envelopes are translated here, the ciphertexts and chain state are each side's own.
GROUP = uuid.UUID("0badc0de-0000-4000-8000-000000000001")


def _legacy_distribution_to_ours(legacy: bytes) -> bytes:
    fields = pb.decode(legacy[1:])
    return (
        b"\x33"
        + wire_pb2.SenderKeyDistributionMessage(
            distribution_uuid=GROUP.bytes,
            chain_id=pb.get_int(fields, 1),
            iteration=pb.get_int(fields, 2),
            chain_key=pb.get_bytes(fields, 3),
            signing_key=pb.get_bytes(fields, 4),
        ).SerializeToString()
    )


def _our_distribution_to_legacy(ours: bytes) -> bytes:
    message = wire_pb2.SenderKeyDistributionMessage()
    message.ParseFromString(ours[1:])
    return b"\x33" + b"".join(
        (
            pb.field_varint(1, message.chain_id),
            pb.field_varint(2, message.iteration),
            pb.field_bytes(3, message.chain_key),
            pb.field_bytes(4, message.signing_key),
        )
    )


def test_axolotl_sender_key_messages_open_with_our_key_schedule(peer: AxolotlPeer) -> None:
    store = make_device("parley").store
    sender = ProtocolAddress(PEER_NAME, 1)
    legacy_distribution = bytes.fromhex(peer.call("group_create", group="g")["distribution"])
    process_sender_key_distribution_message(store, sender, _legacy_distribution_to_ours(legacy_distribution))
    texts = [b"group %d" % i for i in range(4)]
    messages = [bytes.fromhex(peer.call("group_encrypt", group="g", plaintext=t.hex())["body"]) for t in texts]
    record = store.load_sender_key(sender, GROUP)
    assert record is not None
    state = record.states[-1]
    for index in (3, 0, 2, 1):
        message = messages[index]
        assert state.signing_public.verify(message[:-64], message[-64:]), "axolotl's XEdDSA verifies here"
        fields = pb.decode(message[1:-64])
        seed, commit = _message_seed(state, pb.get_int(fields, 2))
        cipher_key, iv = _message_key(seed)
        assert aes_cbc_decrypt(cipher_key, iv, pb.get_bytes(fields, 3)) == texts[index]
        commit()


def test_our_sender_key_messages_open_in_axolotl(peer: AxolotlPeer) -> None:
    store = make_device("parley").store
    us = ProtocolAddress("parley", 1)
    distribution = create_sender_key_distribution_message(store, us, GROUP)
    peer.call("group_process", group="g", sender="parley", distribution=_our_distribution_to_legacy(distribution).hex())
    record = store.load_sender_key(us, GROUP)
    assert record is not None
    signing_key = record.states[-1].signing_key
    assert signing_key is not None
    texts = [b"to the group %d" % i for i in range(4)]
    legacy_messages = []
    for text in texts:
        ours = wire_pb2.SenderKeyMessage()
        ours.ParseFromString(group_encrypt(store, us, GROUP, text)[1:-64])
        body = b"\x33" + b"".join(
            (pb.field_varint(1, ours.chain_id), pb.field_varint(2, ours.iteration), pb.field_bytes(3, ours.ciphertext))
        )
        legacy_messages.append(body + signing_key.sign(body))
    for index in (2, 0, 3, 1):
        answer = peer.call("group_decrypt", group="g", sender="parley", body=legacy_messages[index].hex())
        assert answer == {"plaintext": texts[index].hex()}
    tampered = bytearray(legacy_messages[0])
    tampered[-1] ^= 1
    assert "error" in peer.call("group_decrypt", group="g", sender="parley", body=bytes(tampered).hex())


def test_late_messages_of_an_older_chain_after_a_ratchet_step_both_ways(peer: AxolotlPeer) -> None:
    device = make_device("parley")
    process_prekey_bundle(device.store, peer.address, _peer_bundle(peer), allow_x3dh=True)
    ours = SessionCipher(device.store, peer.address, allow_x3dh=True)
    assert peer.decrypt(ours.encrypt(b"start")) == b"start"
    assert ours.decrypt(peer.encrypt(b"ack")) == b"ack"
    # Theirs: an old chain's messages arrive after the next chain's.
    old = [peer.encrypt(b"old %d" % i) for i in range(2)]
    assert peer.decrypt(ours.encrypt(b"makes them ratchet")) == b"makes them ratchet"
    new = [peer.encrypt(b"new %d" % i) for i in range(2)]
    assert _ratchet_key(old[0]) != _ratchet_key(new[0])
    assert ours.decrypt(new[1]) == b"new 1"
    assert ours.decrypt(old[1]) == b"old 1"
    assert ours.decrypt(new[0]) == b"new 0"
    assert ours.decrypt(old[0]) == b"old 0"
    # Ours: the same the other way round.
    mine_old = [ours.encrypt(b"mine old %d" % i) for i in range(3)]
    assert peer.decrypt(mine_old[2]) == b"mine old 2"
    assert ours.decrypt(peer.encrypt(b"makes us ratchet")) == b"makes us ratchet"
    mine_new = [ours.encrypt(b"mine new %d" % i) for i in range(2)]
    assert _ratchet_key(mine_old[0]) != _ratchet_key(mine_new[0])
    assert peer.decrypt(mine_new[0]) == b"mine new 0"
    assert peer.decrypt(mine_old[1]) == b"mine old 1"
    assert peer.decrypt(mine_old[0]) == b"mine old 0"
    assert peer.decrypt(mine_new[1]) == b"mine new 1"


def _ratchet_key(message: CiphertextMessage) -> bytes:
    return SignalMessage.parse(message.body).ratchet_key.raw
