"""Storage interfaces the caller implements, and in-memory implementations of them.

The library reads and writes state only through these protocols, and writes only after an operation
succeeded. They are synchronous: a caller backed by a network store loads what a conversation needs first
(identity, session record, prekeys), runs the cipher against an in-memory view, then persists what changed.
"""

from __future__ import annotations

import enum
import uuid
from typing import TYPE_CHECKING, NamedTuple, Protocol

from parley_crypto._keys import (
    IdentityKeyPair,
    KyberPreKeyRecord,
    PreKeyRecord,
    PublicKey,
    SignedPreKeyRecord,
)
from parley_crypto._record import SessionRecord

if TYPE_CHECKING:
    from parley_crypto._sender_keys import SenderKeyRecord


class ProtocolAddress(NamedTuple):
    """One remote device: a user name (any stable identifier) and a device id.

    A named tuple: stores key dicts by it on every message, and tuples hash in C.

    Attributes:
        name: the user's identifier, e.g. ``"phone:+15551234567@birdy"``.
        device_id: the device number within that user.
    """

    name: str
    device_id: int

    def __str__(self) -> str:
        return f"{self.name}.{self.device_id}"


class Direction(enum.Enum):
    """Whether a trust decision is for sending to or receiving from an identity."""

    SENDING = "sending"
    RECEIVING = "receiving"


class IdentityKeyStore(Protocol):
    """Our identity and what we trust of others' identities."""

    def get_identity_key_pair(self) -> IdentityKeyPair:
        """Our identity key pair."""
        ...

    def get_local_registration_id(self) -> int:
        """Our registration id."""
        ...

    def save_identity(self, address: ProtocolAddress, identity: PublicKey) -> bool:
        """Records ``identity`` as the address's identity key.

        Returns:
            True if it replaced a different key (an identity change the user should be told about).
        """
        ...

    def is_trusted_identity(self, address: ProtocolAddress, identity: PublicKey, direction: Direction) -> bool:
        """Whether ``identity`` may be used for ``address`` (trust on first use: unknown or unchanged)."""
        ...

    def get_identity(self, address: ProtocolAddress) -> PublicKey | None:
        """The identity key recorded for ``address``, if any."""
        ...


class PreKeyStore(Protocol):
    """Our one-time prekeys."""

    def add_prekeys(self, records: list[PreKeyRecord]) -> None:
        """Keeps freshly generated one-time prekeys (before they are published)."""
        ...

    def load_prekey(self, prekey_id: int) -> PreKeyRecord | None:
        """The one-time prekey with this id, or None."""
        ...

    def remove_prekey(self, prekey_id: int) -> None:
        """Deletes a one-time prekey once a session used it."""
        ...


class SignedPreKeyStore(Protocol):
    """Our signed prekeys (current and recently rotated)."""

    def add_signed_prekey(self, record: SignedPreKeyRecord) -> None:
        """Keeps a freshly generated signed prekey (before it is published)."""
        ...

    def load_signed_prekey(self, signed_prekey_id: int) -> SignedPreKeyRecord | None:
        """The signed prekey with this id, or None."""
        ...


class KyberPreKeyStore(Protocol):
    """Our ML-KEM-1024 prekeys."""

    def add_kyber_prekey(self, record: KyberPreKeyRecord, *, last_resort: bool = False) -> None:
        """Keeps a freshly generated PQ prekey; a last-resort one survives use."""
        ...

    def load_kyber_prekey(self, kyber_prekey_id: int) -> KyberPreKeyRecord | None:
        """The PQ prekey with this id, or None."""
        ...

    def mark_kyber_prekey_used(self, kyber_prekey_id: int) -> None:
        """Called after a session used a PQ prekey: delete it if one-time, keep it if last-resort."""
        ...


class SessionStore(Protocol):
    """Session records per remote device."""

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        """The record for ``address``, or None."""
        ...

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        """Saves the record for ``address``."""
        ...


class SenderKeyStore(Protocol):
    """Sender-key records per (sender device, group distribution id)."""

    def store_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID, record: SenderKeyRecord) -> None:
        """Saves a sender-key record."""
        ...

    def load_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID) -> SenderKeyRecord | None:
        """The sender-key record, or None."""
        ...


class ProtocolStore(IdentityKeyStore, PreKeyStore, SignedPreKeyStore, KyberPreKeyStore, SessionStore, Protocol):
    """Everything a pairwise session cipher needs, in one object."""


class InMemoryProtocolStore:
    """Every store in process memory: for tests, benchmarks and simple clients.

    Identity trust is trust on first use: an unknown identity is trusted, a changed one is not until the caller
    calls :meth:`save_identity` with it (after the user accepted the new safety number).
    Kyber prekeys whose ids are in ``last_resort_kyber_ids`` survive use, as last-resort keys do.
    """

    def __init__(self, identity: IdentityKeyPair, registration_id: int) -> None:
        """Creates empty stores for one device.

        Args:
            identity: our identity key pair.
            registration_id: our registration id.
        """
        self._identity = identity
        self._registration_id = registration_id
        self.identities: dict[ProtocolAddress, PublicKey] = {}
        self.prekeys: dict[int, PreKeyRecord] = {}
        self.signed_prekeys: dict[int, SignedPreKeyRecord] = {}
        self.kyber_prekeys: dict[int, KyberPreKeyRecord] = {}
        self.last_resort_kyber_ids: set[int] = set()
        self.sessions: dict[ProtocolAddress, SessionRecord] = {}
        self.sender_keys: dict[tuple[ProtocolAddress, uuid.UUID], SenderKeyRecord] = {}

    def get_identity_key_pair(self) -> IdentityKeyPair:
        """Our identity key pair."""
        return self._identity

    def get_local_registration_id(self) -> int:
        """Our registration id."""
        return self._registration_id

    def save_identity(self, address: ProtocolAddress, identity: PublicKey) -> bool:
        """Records the identity; True if it replaced a different one."""
        previous = self.identities.get(address)
        self.identities[address] = identity
        return previous is not None and previous != identity

    def is_trusted_identity(self, address: ProtocolAddress, identity: PublicKey, direction: Direction) -> bool:
        """Trusted when unknown or unchanged, in either direction."""
        known = self.identities.get(address)
        return known is None or known == identity

    def get_identity(self, address: ProtocolAddress) -> PublicKey | None:
        """The recorded identity, if any."""
        return self.identities.get(address)

    def add_prekeys(self, records: list[PreKeyRecord]) -> None:
        """Keeps a batch of one-time prekeys."""
        for record in records:
            self.prekeys[record.id] = record

    def load_prekey(self, prekey_id: int) -> PreKeyRecord | None:
        """The one-time prekey, or None."""
        return self.prekeys.get(prekey_id)

    def remove_prekey(self, prekey_id: int) -> None:
        """Deletes a used one-time prekey."""
        self.prekeys.pop(prekey_id, None)

    def add_signed_prekey(self, record: SignedPreKeyRecord) -> None:
        """Keeps a signed prekey."""
        self.signed_prekeys[record.id] = record

    def load_signed_prekey(self, signed_prekey_id: int) -> SignedPreKeyRecord | None:
        """The signed prekey, or None."""
        return self.signed_prekeys.get(signed_prekey_id)

    def add_kyber_prekey(self, record: KyberPreKeyRecord, *, last_resort: bool = False) -> None:
        """Keeps a PQ prekey; a last-resort one survives use."""
        self.kyber_prekeys[record.id] = record
        if last_resort:
            self.last_resort_kyber_ids.add(record.id)

    def load_kyber_prekey(self, kyber_prekey_id: int) -> KyberPreKeyRecord | None:
        """The PQ prekey, or None."""
        return self.kyber_prekeys.get(kyber_prekey_id)

    def mark_kyber_prekey_used(self, kyber_prekey_id: int) -> None:
        """Deletes a one-time PQ prekey; keeps a last-resort one."""
        if kyber_prekey_id not in self.last_resort_kyber_ids:
            self.kyber_prekeys.pop(kyber_prekey_id, None)

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        """The session record, or None."""
        return self.sessions.get(address)

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        """Saves the session record."""
        self.sessions[address] = record

    def store_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID, record: SenderKeyRecord) -> None:
        """Saves a sender-key record."""
        self.sender_keys[(sender, distribution_id)] = record

    def load_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID) -> SenderKeyRecord | None:
        """The sender-key record, or None."""
        return self.sender_keys.get((sender, distribution_id))
