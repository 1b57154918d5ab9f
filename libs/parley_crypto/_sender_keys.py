"""Sender keys for groups, as libsignal does them: one encryption per group message, not one per member.

Each sender device owns a chain per group (``distribution_id``): a chain id, an iteration, a chain key and a
Curve25519 signing key. It hands a ``SenderKeyDistributionMessage`` (version byte + protobuf) to each member
over pairwise sessions, then sends each ``SenderKeyMessage`` (version byte + protobuf + a 64-byte XEdDSA
signature over everything before it) to the whole group; protos/parley/signal/v1/wire.proto has both.
Message keys: seed = HMAC(chain key, 0x01), next chain key = HMAC(chain key, 0x02); HKDF(seed, "WhisperGroup",
48) gives the IV (16 bytes) then the AES-256-CBC key (32 bytes).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

from google.protobuf.message import DecodeError

from parley.signal.v1 import wire_pb2
from parley_crypto import _protobuf as pb
from parley_crypto._errors import (
    CounterTooFarError,
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    InvalidStateError,
    NoSessionError,
)
from parley_crypto._kdf import aes_cbc_decrypt, aes_cbc_encrypt, chain_step, hkdf_sha256
from parley_crypto._keys import KeyPair, PublicKey
from parley_crypto._ratchet import MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS
from parley_crypto._stores import ProtocolAddress, SenderKeyStore
from parley_crypto._wire import check_version

SENDER_KEY_VERSION_BYTE = b"\x33"
SIGNATURE_SIZE = 64
# libsignal keeps up to five chains per (sender, group): a member who rotated keeps decrypting late messages.
MAX_SENDER_KEY_STATES = 5
_GROUP_INFO = b"WhisperGroup"
FORMAT_VERSION = 1


class SenderKeyState:
    """One sender chain of one group: our own (with the private signing key) or a member's."""

    __slots__ = ("chain_id", "chain_key", "iteration", "signing_key", "signing_public", "skipped")

    def __init__(
        self,
        chain_id: int,
        iteration: int,
        chain_key: bytes,
        signing_public: PublicKey,
        *,
        signing_key: KeyPair | None = None,
        skipped: dict[int, bytes] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.iteration = iteration
        self.chain_key = chain_key
        self.signing_public = signing_public
        self.signing_key = signing_key
        self.skipped: dict[int, bytes] = skipped if skipped is not None else {}


class SenderKeyRecord:
    """The sender-key chains of one sender device in one group, newest last."""

    __slots__ = ("states",)

    def __init__(self, states: list[SenderKeyState] | None = None) -> None:
        self.states: list[SenderKeyState] = states if states is not None else []

    def state_for(self, chain_id: int) -> SenderKeyState | None:
        """The chain with this id, if known."""
        for state in self.states:
            if state.chain_id == chain_id:
                return state
        return None

    def add(self, state: SenderKeyState) -> None:
        """Adds a chain, replacing one with the same id and dropping the oldest beyond five."""
        self.states = [known for known in self.states if known.chain_id != state.chain_id]
        self.states.append(state)
        del self.states[:-MAX_SENDER_KEY_STATES]

    def serialize(self) -> bytes:
        """Format byte ``0x01`` + protobuf (1 repeated state: 1 chain id, 2 {1 iteration, 2 chain key},
        3 {1 signing public, 2 signing private}, 4 repeated skipped {1 iteration, 2 seed})."""
        parts = [bytes((FORMAT_VERSION,))]
        for state in self.states:
            signing = pb.field_bytes(1, state.signing_public.serialize())
            if state.signing_key is not None:
                signing += pb.field_bytes(2, state.signing_key.private_key)
            body = [
                pb.field_varint(1, state.chain_id),
                pb.field_bytes(2, pb.field_varint(1, state.iteration) + pb.field_bytes(2, state.chain_key)),
                pb.field_bytes(3, signing),
            ]
            body.extend(
                pb.field_bytes(4, pb.field_varint(1, iteration) + pb.field_bytes(2, seed))
                for iteration, seed in state.skipped.items()
            )
            parts.append(pb.field_bytes(1, b"".join(body)))
        return b"".join(parts)

    @classmethod
    def deserialize(cls, data: bytes) -> SenderKeyRecord:
        """Reads :meth:`serialize`'s output.

        Raises:
            InvalidStateError: unknown format version or malformed data.
        """
        if not data:
            raise InvalidStateError("empty sender key record")
        reader = _READERS.get(data[0])
        if reader is None:
            raise InvalidStateError(f"unknown sender key record format {data[0]}")
        try:
            return reader(data[1:])
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidStateError(f"malformed sender key record: {exc}") from exc


def _read_v1(data: bytes) -> SenderKeyRecord:
    states = []
    for raw in pb.get_repeated_bytes(pb.decode(data), 1):
        fields = pb.decode(raw)
        chain = pb.decode(pb.get_bytes(fields, 2))
        signing = pb.decode(pb.get_bytes(fields, 3))
        public = PublicKey.deserialize(pb.get_bytes(signing, 1))
        private = KeyPair(pb.get_bytes(signing, 2), public) if 2 in signing else None
        skipped = {}
        for raw_key in pb.get_repeated_bytes(fields, 4):
            key_fields = pb.decode(raw_key)
            skipped[pb.get_int(key_fields, 1)] = pb.get_bytes(key_fields, 2)
        if len(pb.get_bytes(chain, 2)) != 32 or any(len(seed) != 32 for seed in skipped.values()):
            raise pb.DecodeError("sender key material must be 32 bytes")
        states.append(
            SenderKeyState(
                pb.get_int(fields, 1),
                pb.get_int(chain, 1),
                pb.get_bytes(chain, 2),
                public,
                signing_key=private,
                skipped=skipped,
            )
        )
    return SenderKeyRecord(states)


_READERS: dict[int, Callable[[bytes], SenderKeyRecord]] = {1: _read_v1}


def _message_key(seed: bytes) -> tuple[bytes, bytes]:
    derived = hkdf_sha256(seed, None, _GROUP_INFO, 48)
    return derived[16:], derived[:16]


def create_sender_key_distribution_message(
    store: SenderKeyStore, sender: ProtocolAddress, distribution_id: uuid.UUID
) -> bytes:
    """Our distribution message for a group, creating our sender chain on first use.

    Args:
        store: our sender-key store.
        sender: our own address.
        distribution_id: the group's distribution id.

    Returns:
        The serialized ``SenderKeyDistributionMessage``; send it to each member over a pairwise session.
    """
    record = store.load_sender_key(sender, distribution_id)
    if record is None or not record.states:
        signing = KeyPair.generate()
        # libsignal draws chain ids as random 31-bit values.
        state = SenderKeyState(
            secrets.randbits(31), 0, secrets.token_bytes(32), signing.public_key, signing_key=signing
        )
        record = SenderKeyRecord([state])
        store.store_sender_key(sender, distribution_id, record)
    state = record.states[-1]
    return (
        SENDER_KEY_VERSION_BYTE
        + wire_pb2.SenderKeyDistributionMessage(
            distribution_uuid=distribution_id.bytes,
            chain_id=state.chain_id,
            iteration=state.iteration,
            chain_key=state.chain_key,
            signing_key=state.signing_public.serialize(),
        ).SerializeToString()
    )


def process_sender_key_distribution_message(store: SenderKeyStore, sender: ProtocolAddress, message: bytes) -> None:
    """Stores a member's sender chain from their distribution message.

    Args:
        store: our sender-key store.
        sender: the member device that sent it (authenticated by the pairwise session it arrived on).
        message: the serialized ``SenderKeyDistributionMessage``.

    Raises:
        InvalidVersionError: unsupported version.
        InvalidMessageError: malformed.
    """
    if not message:
        raise InvalidMessageError("empty sender key distribution message")
    check_version(message[0])
    body = wire_pb2.SenderKeyDistributionMessage()
    try:
        body.ParseFromString(message[1:])
        for name in ("distribution_uuid", "chain_id", "iteration", "chain_key", "signing_key"):
            if not body.HasField(name):
                raise InvalidMessageError(f"sender key distribution message lacks {name}")
        distribution_id = uuid.UUID(bytes=body.distribution_uuid)
        chain_key = body.chain_key
        state = SenderKeyState(body.chain_id, body.iteration, chain_key, PublicKey.deserialize(body.signing_key))
    except (DecodeError, InvalidKeyError, ValueError) as exc:
        raise InvalidMessageError(f"malformed sender key distribution message: {exc}") from exc
    if len(chain_key) != 32:
        raise InvalidMessageError("sender chain key must be 32 bytes")
    record = store.load_sender_key(sender, distribution_id) or SenderKeyRecord()
    if record.state_for(state.chain_id) is not None:
        # A repeated (or replayed) distribution message must not rewind a chain we already follow.
        return
    record.add(state)
    store.store_sender_key(sender, distribution_id, record)


def group_encrypt(
    store: SenderKeyStore, sender: ProtocolAddress, distribution_id: uuid.UUID, plaintext: bytes
) -> bytes:
    """Encrypts one group message with our sender chain.

    Args:
        store: our sender-key store.
        sender: our own address.
        distribution_id: the group's distribution id.
        plaintext: the message.

    Returns:
        The serialized, signed ``SenderKeyMessage``.

    Raises:
        NoSessionError: no sender chain of ours for this group (create a distribution message first).
    """
    record = store.load_sender_key(sender, distribution_id)
    state = record.states[-1] if record is not None and record.states else None
    if record is None or state is None or state.signing_key is None:
        raise NoSessionError(f"no sender key of ours for group {distribution_id}")
    seed, next_chain_key = chain_step(state.chain_key)
    cipher_key, iv = _message_key(seed)
    body = (
        SENDER_KEY_VERSION_BYTE
        + wire_pb2.SenderKeyMessage(
            distribution_uuid=distribution_id.bytes,
            chain_id=state.chain_id,
            iteration=state.iteration,
            ciphertext=aes_cbc_encrypt(cipher_key, iv, plaintext),
        ).SerializeToString()
    )
    signed = body + state.signing_key.sign(body)
    state.chain_key = next_chain_key
    state.iteration += 1
    store.store_sender_key(sender, distribution_id, record)
    return signed


def group_decrypt(store: SenderKeyStore, sender: ProtocolAddress, message: bytes) -> bytes:
    """Decrypts a member's group message; state changes only after the signature and padding check out.

    Args:
        store: our sender-key store.
        sender: the member device that sent it.
        message: the serialized ``SenderKeyMessage``.

    Returns:
        The plaintext.

    Raises:
        NoSessionError: no chain from this sender for this group and chain id.
        InvalidSignatureError: the signature does not verify (forged or corrupted).
        DuplicateMessageError: already decrypted.
        CounterTooFarError: iteration beyond the skip window.
        InvalidVersionError: unsupported version.
        InvalidMessageError: malformed.
    """
    if len(message) < 1 + SIGNATURE_SIZE:
        raise InvalidMessageError("sender key message too short")
    check_version(message[0])
    body, signature = message[:-SIGNATURE_SIZE], message[-SIGNATURE_SIZE:]
    parsed = wire_pb2.SenderKeyMessage()
    try:
        parsed.ParseFromString(body[1:])
        for name in ("distribution_uuid", "chain_id", "iteration", "ciphertext"):
            if not parsed.HasField(name):
                raise InvalidMessageError(f"sender key message lacks {name}")
        distribution_id = uuid.UUID(bytes=parsed.distribution_uuid)
    except (DecodeError, ValueError) as exc:
        raise InvalidMessageError(f"malformed sender key message: {exc}") from exc
    chain_id, iteration, ciphertext = parsed.chain_id, parsed.iteration, parsed.ciphertext
    record = store.load_sender_key(sender, distribution_id)
    state = record.state_for(chain_id) if record is not None else None
    if record is None or state is None:
        raise NoSessionError(f"no sender key from {sender} for group {distribution_id}")
    if not state.signing_public.verify(body, signature):
        raise InvalidSignatureError("sender key message signature does not verify")
    seed, commit = _message_seed(state, iteration)
    cipher_key, iv = _message_key(seed)
    plaintext = aes_cbc_decrypt(cipher_key, iv, ciphertext)
    commit()
    store.store_sender_key(sender, distribution_id, record)
    return plaintext


def _message_seed(state: SenderKeyState, iteration: int) -> tuple[bytes, Callable[[], None]]:
    """The message-key seed for ``iteration`` and the state change to apply once the message checks out.

    Raises:
        DuplicateMessageError: already decrypted.
        CounterTooFarError: iteration beyond the skip window.
    """
    if iteration < state.iteration:
        old_seed = state.skipped.get(iteration)
        if old_seed is None:
            raise DuplicateMessageError(f"group message {iteration} was already received")

        def forget() -> None:
            del state.skipped[iteration]

        return old_seed, forget
    if iteration - state.iteration > MAX_FORWARD_JUMPS:
        raise CounterTooFarError(f"iteration jumps {iteration - state.iteration} ahead")
    chain_key = state.chain_key
    skipped: list[tuple[int, bytes]] = []
    for index in range(state.iteration, iteration):
        skip_seed, chain_key = chain_step(chain_key)
        skipped.append((index, skip_seed))
    seed, chain_key = chain_step(chain_key)

    def advance() -> None:
        state.chain_key = chain_key
        state.iteration = iteration + 1
        for index, skip_seed in skipped[-MAX_MESSAGE_KEYS:]:
            state.skipped[index] = skip_seed
        while len(state.skipped) > MAX_MESSAGE_KEYS:
            del state.skipped[next(iter(state.skipped))]

    return seed, advance
