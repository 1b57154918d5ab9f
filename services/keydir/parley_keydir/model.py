"""The key directory's domain records: keys in libsignal's serialized forms, checked before they are stored."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignedKey:
    """A signed prekey or PQ last-resort prekey: id, serialized public key, XEdDSA signature."""

    key_id: int
    public_key: bytes
    signature: bytes


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
    claims_in_window: int = 0
    """One-time prekey claims of the device in the drain guard's current window, this one included."""


@dataclass(frozen=True, slots=True)
class DrainGuard:
    """How many one-time prekeys one device hands out per window, whoever asks (beyond: bundles without one)."""

    max_claims: int = 50
    window_ms: int = 3600 * 1000


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Outcome of a publication."""

    one_time_prekey_count: int
    identity_key_changed: bool
