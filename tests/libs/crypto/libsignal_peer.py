"""The client side of ``libsignal/peer.js``: real libsignal devices in a Node process, spoken to in JSON lines.

:class:`LibsignalPeer` is the process; :class:`LibsignalDevice` one libsignal device in it, with methods named
after what an app does (publish a bundle, process one, encrypt, decrypt). Bundles and messages cross as
Parley's own types, so a test reads as a conversation between two devices.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from parley_crypto import CiphertextMessage, KemPublicKey, MessageType, PreKeyBundle, ProtocolAddress, PublicKey

PEER_DIR = Path(__file__).resolve().parent / "libsignal"
INSTALLED = PEER_DIR / "node_modules" / "@signalapp" / "libsignal-client" / "package.json"

KyberKind = Literal["one_time", "last_resort"]


class LibsignalError(RuntimeError):
    """libsignal raised; the message is its error text."""


class LibsignalPeer:
    """The Node process: one request, one answer, in order."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def call(self, op: str, **fields: Any) -> Any:
        """Sends a request and returns its ``ok`` value.

        Raises:
            LibsignalError: libsignal raised.
        """
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise LibsignalError(f"peer.js exited ({self._process.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise LibsignalError(answer["error"])
        return answer["ok"]

    def device(self, name: str | None = None, *, registration_id: int = 4242) -> LibsignalDevice:
        """A new libsignal device ``name``.1; the name is a fresh ACI (a UUID string) unless given."""
        name = name or str(uuid.uuid4())
        created = self.call("create_device", name=name, device_id=1, registration_id=registration_id)
        return LibsignalDevice(
            self, ProtocolAddress(name, 1), PublicKey.deserialize(bytes.fromhex(created["identity_key"]))
        )


def missing_node_reason() -> str | None:
    """Why the peer cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed and `make setup` could not install it (needs root and apt-get)"
    if not INSTALLED.exists():
        return f"{INSTALLED.parent} is missing: run `make setup` (npm ci in {PEER_DIR})"
    return None


@contextmanager
def running_peer() -> Iterator[LibsignalPeer]:
    """Starts ``peer.js`` under Node and stops it on exit."""
    node = shutil.which("node")
    assert node is not None
    process = subprocess.Popen(  # noqa: S603 - Node on PATH running a script from this repository
        [node, str(PEER_DIR / "peer.js")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PEER_DIR
    )
    try:
        yield LibsignalPeer(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


class LibsignalDevice:
    """One libsignal device in the peer process.

    Attributes:
        address: its protocol address (an ACI and device id 1).
        identity_key: its public identity key.
    """

    def __init__(self, peer: LibsignalPeer, address: ProtocolAddress, identity_key: PublicKey) -> None:
        self._peer = peer
        self.address = address
        self.identity_key = identity_key

    def _call(self, op: str, **fields: Any) -> Any:
        return self._peer.call(op, device=self.address.name, **fields)

    def bundle(self, *, one_time_prekey: bool = True, kyber: KyberKind = "one_time") -> PreKeyBundle:
        """Publishes a bundle: a fresh one-time EC prekey if asked, a fresh one-time or the last-resort Kyber key."""
        raw = self._call("bundle", one_time_prekey=one_time_prekey, kyber=kyber)
        return PreKeyBundle(
            registration_id=raw["registration_id"],
            device_id=raw["device_id"],
            identity_key=PublicKey.deserialize(bytes.fromhex(raw["identity_key"])),
            signed_prekey_id=raw["signed_prekey_id"],
            signed_prekey=PublicKey.deserialize(bytes.fromhex(raw["signed_prekey"])),
            signed_prekey_signature=bytes.fromhex(raw["signed_prekey_signature"]),
            prekey_id=raw["prekey_id"],
            prekey=PublicKey.deserialize(bytes.fromhex(raw["prekey"])) if raw["prekey"] else None,
            kyber_prekey_id=raw["kyber_prekey_id"],
            kyber_prekey=KemPublicKey.deserialize(bytes.fromhex(raw["kyber_prekey"])),
            kyber_prekey_signature=bytes.fromhex(raw["kyber_prekey_signature"]),
        )

    def process_bundle(self, remote: ProtocolAddress, bundle: PreKeyBundle, **overrides: object) -> None:
        """Starts a session with ``remote`` from its bundle (libsignal's ``processPreKeyBundle``).

        ``overrides`` replace fields of the bundle as sent, to forge one.
        """
        fields: dict[str, object] = {
            "registration_id": bundle.registration_id,
            "device_id": bundle.device_id,
            "prekey_id": bundle.prekey_id,
            "prekey": bundle.prekey.serialize().hex() if bundle.prekey else None,
            "signed_prekey_id": bundle.signed_prekey_id,
            "signed_prekey": bundle.signed_prekey.serialize().hex(),
            "signed_prekey_signature": bundle.signed_prekey_signature.hex(),
            "identity_key": bundle.identity_key.serialize().hex(),
            "kyber_prekey_id": bundle.kyber_prekey_id,
            "kyber_prekey": bundle.kyber_prekey.serialize().hex() if bundle.kyber_prekey else None,
            "kyber_prekey_signature": (bundle.kyber_prekey_signature or b"").hex(),
        }
        self._call("process_bundle", remote=remote.name, remote_device_id=remote.device_id, bundle=fields | overrides)

    def encrypt(self, remote: ProtocolAddress, plaintexts: Sequence[bytes]) -> list[CiphertextMessage]:
        """Encrypts each plaintext to ``remote`` in turn."""
        answers = self._call(
            "encrypt", remote=remote.name, remote_device_id=remote.device_id, plaintexts=[p.hex() for p in plaintexts]
        )
        return [CiphertextMessage(MessageType(a["type"]), bytes.fromhex(a["body"])) for a in answers]

    def decrypt(self, remote: ProtocolAddress, messages: Sequence[CiphertextMessage]) -> list[bytes | LibsignalError]:
        """Decrypts each message from ``remote`` in turn: its plaintext, or libsignal's error for that message."""
        answers = self._call(
            "decrypt",
            remote=remote.name,
            remote_device_id=remote.device_id,
            messages=[{"type": int(m.type), "body": m.body.hex()} for m in messages],
        )
        return [bytes.fromhex(a["plaintext"]) if "plaintext" in a else LibsignalError(a["error"]) for a in answers]

    def session_record(self, remote: ProtocolAddress) -> bytes | None:
        """libsignal's serialized session record for ``remote``, as its store keeps it."""
        raw = self._call("session_record", remote=remote.name, remote_device_id=remote.device_id)
        return bytes.fromhex(raw) if raw is not None else None

    def kyber_prekey(self) -> dict[str, bytes]:
        """A signed Kyber1024 key pair made by libsignal (not stored): ``public_key``, ``secret_key``, ``signature``."""
        return {key: bytes.fromhex(value) for key, value in self._call("kyber_prekey").items()}

    def sender_key_distribution(self, group: uuid.UUID) -> bytes:
        """This device's sender-key distribution message for ``group``."""
        return bytes.fromhex(self._call("sender_key_distribution", distribution_id=str(group)))

    def group_encrypt(self, group: uuid.UUID, plaintext: bytes) -> bytes:
        """A sender-key message from this device to ``group``."""
        return bytes.fromhex(self._call("group_encrypt", distribution_id=str(group), plaintext=plaintext.hex()))

    def process_distribution(self, sender: ProtocolAddress, message: bytes) -> None:
        """Takes ``sender``'s sender-key distribution message."""
        self._call("process_distribution", remote=sender.name, remote_device_id=sender.device_id, message=message.hex())

    def group_decrypt(self, sender: ProtocolAddress, message: bytes) -> bytes:
        """Decrypts a sender-key message from ``sender``."""
        return bytes.fromhex(
            self._call("group_decrypt", remote=sender.name, remote_device_id=sender.device_id, message=message.hex())
        )
