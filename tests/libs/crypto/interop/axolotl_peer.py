"""A Signal Protocol peer driven over stdin/stdout, built on python-axolotl (an independent implementation).

Runs inside .venv-interop (python-axolotl needs protobuf 3.x, which the project's venv cannot hold), never in
the project's venv. One JSON object per line in, one per line out; bytes travel as hex. Operations:

- ``init``: new identity, registration id, signed prekey ``spk_id`` and one-time prekey ``prekey_id``;
  answers the bundle.
- ``process_bundle``: starts a session with ``name`` from a bundle.
- ``encrypt``: ``name``, ``plaintext``; answers ``type`` (2 whisper, 3 prekey) and ``body``.
- ``decrypt``: ``name``, ``type``, ``body``; answers ``plaintext`` or ``error`` (the exception class name).
- ``sign``: XEdDSA over ``message`` with the identity key; ``verify``: ``public``, ``message``, ``signature``.
- ``group_create``: our sender key for ``group``, as a (legacy layout) SenderKeyDistributionMessage.
- ``group_process``: a ``distribution`` message from ``sender`` for ``group``.
- ``group_encrypt``: ``group``, ``plaintext``; answers ``body``.
- ``group_decrypt``: ``group``, ``sender``, ``body``; answers ``plaintext`` or ``error``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import axolotl_curve25519  # type: ignore[import-not-found]
from axolotl.axolotladdress import AxolotlAddress  # type: ignore[import-not-found]
from axolotl.ecc.curve import Curve  # type: ignore[import-not-found]
from axolotl.groups.groupcipher import GroupCipher  # type: ignore[import-not-found]
from axolotl.groups.groupsessionbuilder import GroupSessionBuilder  # type: ignore[import-not-found]
from axolotl.groups.senderkeyname import SenderKeyName  # type: ignore[import-not-found]
from axolotl.identitykey import IdentityKey  # type: ignore[import-not-found]
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage  # type: ignore[import-not-found]
from axolotl.protocol.senderkeydistributionmessage import (  # type: ignore[import-not-found]
    SenderKeyDistributionMessage,
)
from axolotl.protocol.whispermessage import WhisperMessage  # type: ignore[import-not-found]
from axolotl.sessionbuilder import SessionBuilder  # type: ignore[import-not-found]
from axolotl.sessioncipher import SessionCipher  # type: ignore[import-not-found]
from axolotl.state.prekeybundle import PreKeyBundle  # type: ignore[import-not-found]
from axolotl.state.prekeyrecord import PreKeyRecord  # type: ignore[import-not-found]
from axolotl.state.signedprekeyrecord import SignedPreKeyRecord  # type: ignore[import-not-found]
from axolotl.tests.groups.inmemorysenderkeystore import InMemorySenderKeyStore  # type: ignore[import-not-found]
from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore  # type: ignore[import-not-found]

SELF = "axolotl"


class Peer:
    """One axolotl device with its in-memory store."""

    def __init__(self) -> None:
        self.store = InMemoryAxolotlStore()
        self.sender_keys = InMemorySenderKeyStore()

    @staticmethod
    def _name(group: str, sender: str) -> Any:
        return SenderKeyName(group, AxolotlAddress(sender, 1))

    def _cipher(self, name: str) -> Any:
        return SessionCipher(self.store, self.store, self.store, self.store, name, 1)

    def init(self, request: dict[str, Any]) -> dict[str, Any]:
        identity = self.store.getIdentityKeyPair()
        signed_pair = Curve.generateKeyPair()
        signature = Curve.calculateSignature(identity.getPrivateKey(), signed_pair.getPublicKey().serialize())
        self.store.storeSignedPreKey(
            request["spk_id"], SignedPreKeyRecord(request["spk_id"], 0, signed_pair, signature)
        )
        prekey_pair = Curve.generateKeyPair()
        self.store.storePreKey(request["prekey_id"], PreKeyRecord(request["prekey_id"], prekey_pair))
        return {
            "registration_id": self.store.getLocalRegistrationId(),
            "identity_key": identity.getPublicKey().serialize().hex(),
            "signed_prekey": signed_pair.getPublicKey().serialize().hex(),
            "signed_prekey_signature": bytes(signature).hex(),
            "prekey": prekey_pair.getPublicKey().serialize().hex(),
        }

    def process_bundle(self, request: dict[str, Any]) -> dict[str, Any]:
        prekey = Curve.decodePoint(bytes.fromhex(request["prekey"]), 0) if request.get("prekey") else None
        bundle = PreKeyBundle(
            request["registration_id"],
            1,
            request.get("prekey_id"),
            prekey,
            request["signed_prekey_id"],
            Curve.decodePoint(bytes.fromhex(request["signed_prekey"]), 0),
            bytes.fromhex(request["signed_prekey_signature"]),
            IdentityKey(bytes.fromhex(request["identity_key"]), 0),
        )
        SessionBuilder(self.store, self.store, self.store, self.store, request["name"], 1).processPreKeyBundle(bundle)
        return {}

    def encrypt(self, request: dict[str, Any]) -> dict[str, Any]:
        message = self._cipher(request["name"]).encrypt(bytes.fromhex(request["plaintext"]))
        return {"type": message.getType(), "body": bytes(message.serialize()).hex()}

    def decrypt(self, request: dict[str, Any]) -> dict[str, Any]:
        cipher = self._cipher(request["name"])
        body = bytes.fromhex(request["body"])
        try:
            if request["type"] == 3:
                plaintext = cipher.decryptPkmsg(PreKeyWhisperMessage(serialized=body), textMsg=False)
            else:
                plaintext = cipher.decryptMsg(WhisperMessage(serialized=body), textMsg=False)
        except Exception as exc:  # the test asserts on the class name of whatever axolotl raised
            return {"error": type(exc).__name__}
        return {"plaintext": bytes(plaintext).hex()}

    def sign(self, request: dict[str, Any]) -> dict[str, Any]:
        private = self.store.getIdentityKeyPair().getPrivateKey().serialize()
        signature = axolotl_curve25519.calculateSignature(os.urandom(64), private, bytes.fromhex(request["message"]))
        return {"signature": bytes(signature).hex()}

    def verify(self, request: dict[str, Any]) -> dict[str, Any]:
        public = bytes.fromhex(request["public"])[1:]
        result = axolotl_curve25519.verifySignature(
            public, bytes.fromhex(request["message"]), bytes.fromhex(request["signature"])
        )
        # The C binding answers 0 for a valid signature.
        return {"valid": result == 0}

    def group_create(self, request: dict[str, Any]) -> dict[str, Any]:
        message = GroupSessionBuilder(self.sender_keys).create(self._name(request["group"], SELF))
        return {"distribution": bytes(message.serialize()).hex()}

    def group_process(self, request: dict[str, Any]) -> dict[str, Any]:
        message = SenderKeyDistributionMessage(serialized=bytes.fromhex(request["distribution"]))
        GroupSessionBuilder(self.sender_keys).process(self._name(request["group"], request["sender"]), message)
        return {}

    def group_encrypt(self, request: dict[str, Any]) -> dict[str, Any]:
        cipher = GroupCipher(self.sender_keys, self._name(request["group"], SELF))
        return {"body": bytes(cipher.encrypt(bytes.fromhex(request["plaintext"]))).hex()}

    def group_decrypt(self, request: dict[str, Any]) -> dict[str, Any]:
        cipher = GroupCipher(self.sender_keys, self._name(request["group"], request["sender"]))
        try:
            plaintext = cipher.decrypt(bytes.fromhex(request["body"]))
        except Exception as exc:  # the test asserts on the class name of whatever axolotl raised
            return {"error": type(exc).__name__}
        return {"plaintext": bytes(plaintext).hex()}


def main() -> None:
    """Serves requests until stdin closes."""
    peer = Peer()
    for line in sys.stdin:
        request = json.loads(line)
        response = getattr(peer, request["op"])(request)
        sys.stdout.write(json.dumps(response) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
