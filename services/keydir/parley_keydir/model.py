"""The key directory's domain records: keys in libsignal's serialized forms, checked before they are stored."""

from __future__ import annotations

import enum
from dataclasses import dataclass

_ID_SIZE = 4
_SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class SignedKey:
    """A signed prekey, one-time PQ prekey or last-resort PQ prekey: id, serialized public key, XEdDSA signature."""

    key_id: int
    public_key: bytes
    signature: bytes

    def pack(self) -> bytes:
        """The stored form of a one-time PQ prekey: 4-byte big-endian id + key + 64-byte signature."""
        return self.key_id.to_bytes(_ID_SIZE, "big") + self.public_key + self.signature

    @classmethod
    def unpack(cls, entry: bytes) -> SignedKey:
        """Reads the stored form (the key is whatever lies between id and signature, so it comes back as sent)."""
        return cls(int.from_bytes(entry[:_ID_SIZE], "big"), entry[_ID_SIZE:-_SIGNATURE_SIZE], entry[-_SIGNATURE_SIZE:])


class PqPreKeyKind(enum.Enum):
    """Which PQ prekey a bundle carries."""

    ONE_TIME = "one_time"
    """Claimed for this sender alone."""
    LAST_RESORT = "last_resort"
    """The device's shared fallback: no one-time PQ prekey was left, or the drain guard withheld it."""


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    """A one-time prekey: id and 33-byte serialized public key."""

    key_id: int
    public_key: bytes

    def pack(self) -> bytes:
        """The stored form: 4-byte big-endian id + key."""
        return self.key_id.to_bytes(4, "big") + self.public_key

    @classmethod
    def unpack(cls, entry: bytes) -> OneTimeKey:
        """Reads the stored form."""
        return cls(int.from_bytes(entry[:4], "big"), entry[4:])


@dataclass(frozen=True, slots=True)
class Bundle:
    """A claimed prekey bundle for one device."""

    device_id: int
    registration_id: int
    identity_key: bytes
    signed_prekey: SignedKey
    one_time_prekey: OneTimeKey | None
    pq_prekey: SignedKey | None
    remaining_one_time_prekeys: int
    pq_prekey_kind: PqPreKeyKind | None = None
    """Which kind ``pq_prekey`` is; None when the device published no PQ prekey at all."""
    remaining_one_time_pq_prekeys: int = 0
    claims_in_window: int = 0
    """One-time prekey claims of the device in the drain guard's current window, this one included."""


@dataclass(frozen=True, slots=True)
class DrainGuard:
    """How many bundles with one-time prekeys (EC and PQ) one device hands out per window, whoever asks (beyond:
    bundles without a one-time prekey and with the last-resort PQ prekey)."""

    max_claims: int = 50
    window_ms: int = 3600 * 1000


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Outcome of a publication."""

    one_time_prekey_count: int
    identity_key_changed: bool
    one_time_pq_prekey_count: int = 0


@dataclass(frozen=True, slots=True)
class PreKeyCounts:
    """What a device has left in the directory."""

    one_time_prekeys: int
    one_time_pq_prekeys: int
    has_last_resort_pq_prekey: bool
