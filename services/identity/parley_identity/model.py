"""The identity service's domain records (providers travel as ``parley.identity.v1.Provider`` messages)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from parley.identity.v1.identity_pb2 import ConsentState, InboxMode, Provider


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device."""

    device_id: int
    registration_id: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A user's interop consent."""

    state: ConsentState.ValueType
    inbox_mode: InboxMode.ValueType
    allowed_providers: frozenset[str]
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class UserView:
    """What a reachability decision needs to know about a user, read in one round trip.

    Attributes:
        exists: whether the user is registered.
        consent: consent state (OFF for an absent user).
        inbox_mode: inbox mode.
        asking_provider_allowed: whether the asking provider is in the user's allowed set.
        devices: the user's devices, ordered by id.
        mutes_until_ms: when the user's mutes of the asking user and of the asking provider end (0 = never), for
            those that exist, ended or not.
    """

    exists: bool
    consent: ConsentState.ValueType
    inbox_mode: InboxMode.ValueType
    asking_provider_allowed: bool
    devices: tuple[DeviceRecord, ...]
    mutes_until_ms: tuple[int, ...] = ()


class MuteTarget(enum.Enum):
    """What a mute silences."""

    PEER = "user"
    """One peer user."""
    PROVIDER = "provider"
    """Every user of one provider."""


@dataclass(frozen=True, slots=True)
class MuteRecord:
    """One mute of a user.

    Attributes:
        target: what kind of thing is muted.
        subject: the peer user's canonical address, or the provider id.
        until_ms: when the mute ends, Unix ms; 0 for ever.
        created_at_ms: when it was set.
    """

    target: MuteTarget
    subject: str
    until_ms: int
    created_at_ms: int

    @property
    def field(self) -> str:
        """The mute's field in the user's mutes hash."""
        return mute_field(self.target, self.subject)

    def in_force(self, now_ms: int) -> bool:
        """Whether the mute still holds at ``now_ms``."""
        return self.until_ms == 0 or self.until_ms > now_ms


def mute_field(target: MuteTarget, subject: str) -> str:
    """The field of a mute of ``subject`` in a user's mutes hash, e.g. ``provider:birdy``."""
    return f"{target.value}:{subject}"


@dataclass(frozen=True, slots=True)
class StoredProvider:
    """A provider with the version it was read at (for optimistic updates)."""

    provider: Provider
    version: int
