"""Session records (the current session plus archived ones) and their versioned serialization.

Serialized form, version 2: one format byte ``0x02`` then a protobuf laid out like libsignal's
``RecordStructure`` (1 current session, 2 previous sessions), each session like libsignal's
``SessionStructure``: 1 version, 2 local identity, 3 remote identity, 4 root key, 5 previous counter,
6 sender chain, 7 receiver chains, 9 pending prekey, 10 remote registration id, 11 local registration id,
13 Alice's base key, 14 pending PQ prekey, 15 SPQR state (``pq_ratchet_state``, opaque bytes). Version 1
differed only in keeping the pending PQ prekey in field 15 and having no SPQR state. A chain is 1 ratchet
public key, 2 ratchet private key (sender only), 3 chain key {1 index, 2 key}, 4 skipped message keys
{1 index, 5 seed}. A pending prekey is 1 one-time prekey id, 2 base key, 3 signed prekey id; a pending PQ
prekey 1 id, 2 ciphertext.
:data:`_READERS` maps every format version ever written to its reader; tests keep golden files of each.
"""

from __future__ import annotations

from collections.abc import Callable

from parley_crypto import _protobuf as pb
from parley_crypto._errors import InvalidKeyError, InvalidStateError
from parley_crypto._keys import KeyPair, PublicKey
from parley_crypto._ratchet import PendingPreKey, ReceiverChain, SessionState

# libsignal keeps up to 40 archived sessions per address.
ARCHIVED_STATES_MAX = 40
FORMAT_VERSION = 2
# Where each format keeps the pending PQ prekey (format 1 put it where libsignal keeps the SPQR state).
_PENDING_KYBER_FIELD = {1: 15, 2: 14}
_PQ_RATCHET_FIELD = 15


class SessionRecord:
    """All sessions with one remote device: the current one and up to 40 archived ones (newest first).

    Archived sessions still decrypt late messages sent before the remote side started a new session.
    """

    __slots__ = ("current", "previous")

    def __init__(self, current: SessionState | None = None, previous: list[SessionState] | None = None) -> None:
        self.current = current
        self.previous: list[SessionState] = previous if previous is not None else []

    def promote(self, state: SessionState) -> None:
        """Makes ``state`` current, archiving the previous current session."""
        if self.current is not None:
            self.previous.insert(0, self.current)
            del self.previous[ARCHIVED_STATES_MAX:]
        self.current = state

    def promote_previous(self, index: int) -> None:
        """Makes archived session ``index`` current again (it just decrypted a message)."""
        state = self.previous.pop(index)
        self.promote(state)

    def find_by_base_key(self, version: int, base_key: PublicKey) -> SessionState | None:
        """The session set up by the prekey message with this base key, if it was already processed."""
        for state in ([self.current] if self.current else []) + self.previous:
            if state.version == version and state.alice_base_key == base_key:
                return state
        return None

    def serialize(self) -> bytes:
        """The versioned serialized form (see the module docstring)."""
        parts = [bytes((FORMAT_VERSION,))]
        if self.current is not None:
            parts.append(pb.field_bytes(1, _write_state(self.current)))
        parts.extend(pb.field_bytes(2, _write_state(state)) for state in self.previous)
        return b"".join(parts)

    @classmethod
    def deserialize(cls, data: bytes) -> SessionRecord:
        """Reads any format version this library ever wrote.

        Raises:
            InvalidStateError: unknown format version or malformed data.
        """
        if not data:
            raise InvalidStateError("empty session record")
        reader = _READERS.get(data[0])
        if reader is None:
            raise InvalidStateError(f"unknown session record format {data[0]}")
        try:
            return reader(data[1:])
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidStateError(f"malformed session record: {exc}") from exc


def _write_chain_key(index: int, key: bytes) -> bytes:
    return pb.field_varint(1, index) + pb.field_bytes(2, key)


def _write_state(state: SessionState) -> bytes:
    sender = (
        pb.field_bytes(1, state.sender_ratchet.public_key.serialize())
        + pb.field_bytes(2, state.sender_ratchet.private_key)
        + pb.field_bytes(3, _write_chain_key(state.sender_index, state.sender_chain_key))
    )
    parts = [
        pb.field_varint(1, state.version),
        pb.field_bytes(2, state.local_identity.serialize()),
        pb.field_bytes(3, state.remote_identity.serialize()),
        pb.field_bytes(4, state.root_key),
        pb.field_varint(5, state.previous_counter),
        pb.field_bytes(6, sender),
    ]
    for chain in state.receiver_chains:
        body = [
            pb.field_bytes(1, chain.ratchet_key.serialize()),
            pb.field_bytes(3, _write_chain_key(chain.index, chain.chain_key)),
        ]
        body.extend(
            pb.field_bytes(4, pb.field_varint(1, counter) + pb.field_bytes(5, seed))
            for counter, seed in chain.skipped.items()
        )
        parts.append(pb.field_bytes(7, b"".join(body)))
    pending = state.pending_prekey
    if pending is not None:
        body = [pb.field_bytes(2, pending.base_key.serialize()), pb.field_varint(3, pending.signed_prekey_id)]
        if pending.prekey_id is not None:
            body.insert(0, pb.field_varint(1, pending.prekey_id))
        parts.append(pb.field_bytes(9, b"".join(body)))
        if pending.kyber_prekey_id is not None and pending.kyber_ciphertext is not None:
            parts.append(
                pb.field_bytes(
                    _PENDING_KYBER_FIELD[FORMAT_VERSION],
                    pb.field_varint(1, pending.kyber_prekey_id) + pb.field_bytes(2, pending.kyber_ciphertext),
                )
            )
    parts.append(pb.field_varint(10, state.remote_registration_id))
    parts.append(pb.field_varint(11, state.local_registration_id))
    parts.append(pb.field_bytes(13, state.alice_base_key.serialize()))
    if state.pq_ratchet_state:
        parts.append(pb.field_bytes(_PQ_RATCHET_FIELD, state.pq_ratchet_state))
    return b"".join(parts)


def _key32(value: bytes) -> bytes:
    # Root, chain and message-key material is always 32 bytes; anything else is a corrupted record.
    if len(value) != 32:
        raise pb.DecodeError(f"key material of {len(value)} bytes")
    return value


def _read_chain_key(data: bytes) -> tuple[int, bytes]:
    fields = pb.decode(data)
    return pb.get_int(fields, 1), _key32(pb.get_bytes(fields, 2))


def _read_state(data: bytes, format_version: int) -> SessionState:
    fields = pb.decode(data)
    kyber_field = _PENDING_KYBER_FIELD[format_version]
    sender = pb.decode(pb.get_bytes(fields, 6))
    sender_public = PublicKey.deserialize(pb.get_bytes(sender, 1))
    sender_index, sender_chain_key = _read_chain_key(pb.get_bytes(sender, 3))
    chains = []
    for raw_chain in pb.get_repeated_bytes(fields, 7):
        chain_fields = pb.decode(raw_chain)
        index, chain_key = _read_chain_key(pb.get_bytes(chain_fields, 3))
        skipped = {}
        for raw_key in pb.get_repeated_bytes(chain_fields, 4):
            key_fields = pb.decode(raw_key)
            skipped[pb.get_int(key_fields, 1)] = _key32(pb.get_bytes(key_fields, 5))
        chains.append(ReceiverChain(PublicKey.deserialize(pb.get_bytes(chain_fields, 1)), chain_key, index, skipped))
    pending = None
    if 9 in fields:
        pending_fields = pb.decode(pb.get_bytes(fields, 9))
        pending = PendingPreKey(
            pb.get_int(pending_fields, 1) if 1 in pending_fields else None,
            pb.get_int(pending_fields, 3),
            PublicKey.deserialize(pb.get_bytes(pending_fields, 2)),
        )
        if kyber_field in fields:
            kyber_fields = pb.decode(pb.get_bytes(fields, kyber_field))
            pending.kyber_prekey_id = pb.get_int(kyber_fields, 1)
            pending.kyber_ciphertext = pb.get_bytes(kyber_fields, 2)
    version = pb.get_int(fields, 1)
    if version not in (3, 4):
        raise pb.DecodeError(f"session version {version}")
    return SessionState(
        version=version,
        local_identity=PublicKey.deserialize(pb.get_bytes(fields, 2)),
        remote_identity=PublicKey.deserialize(pb.get_bytes(fields, 3)),
        root_key=_key32(pb.get_bytes(fields, 4)),
        sender_ratchet=KeyPair(pb.get_bytes(sender, 2), sender_public),
        sender_chain_key=sender_chain_key,
        sender_index=sender_index,
        previous_counter=pb.get_int(fields, 5, 0),
        receiver_chains=chains,
        pending_prekey=pending,
        alice_base_key=PublicKey.deserialize(pb.get_bytes(fields, 13)),
        remote_registration_id=pb.get_int(fields, 10, 0),
        local_registration_id=pb.get_int(fields, 11, 0),
        pq_ratchet_state=pb.get_bytes(fields, _PQ_RATCHET_FIELD, b"") if format_version >= 2 else b"",
    )


def _reader(format_version: int) -> Callable[[bytes], SessionRecord]:
    def read(data: bytes) -> SessionRecord:
        fields = pb.decode(data)
        current = _read_state(pb.get_bytes(fields, 1), format_version) if 1 in fields else None
        previous = [_read_state(raw, format_version) for raw in pb.get_repeated_bytes(fields, 2)]
        return SessionRecord(current, previous)

    return read


_READERS: dict[int, Callable[[bytes], SessionRecord]] = {1: _reader(1), 2: _reader(2)}
