"""The identity service's domain records (providers travel as ``parley.identity.v1.Provider`` messages)."""

from __future__ import annotations

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
    """

    exists: bool
    consent: ConsentState.ValueType
    inbox_mode: InboxMode.ValueType
    asking_provider_allowed: bool
    devices: tuple[DeviceRecord, ...]


@dataclass(frozen=True, slots=True)
class StoredProvider:
    """A provider with the version it was read at (for optimistic updates)."""

    provider: Provider
    version: int
