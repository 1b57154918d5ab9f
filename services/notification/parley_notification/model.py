"""Notification's domain records: webhooks, queued deliveries, dead letters, notices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Webhook:
    """A provider's registered endpoint and the secret that signs what is posted to it."""

    url: str
    secret: bytes


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A webhook call an event asks for, before it is queued.

    Attributes:
        delivery_id: the idempotency key: derived from the event id and the provider, so taking the same event
            in twice yields the same id.
        provider_id: whose webhook receives it.
        type: the event type, e.g. ``"message_waiting"``.
        data: the payload's JSON object (addresses, push tokens, counts: never content or names).
        occurred_at_ms: when the event happened.
        coalesce_key: the device whose wake-ups are coalesced, or None when the delivery is never merged.
    """

    delivery_id: str
    provider_id: str
    type: str
    data: str
    occurred_at_ms: int
    coalesce_key: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A queued delivery as claimed for one attempt.

    Attributes:
        delivery_id: the idempotency key, stable across attempts and redrives.
        provider_id: whose webhook receives it.
        type: the event type.
        data: the payload's JSON object.
        occurred_at_ms: when the (latest merged) event happened.
        attempt: this attempt's number, from 1.
        coalesced: events merged into this delivery besides its own.
        created_at_ms: when it was queued.
    """

    delivery_id: str
    provider_id: str
    type: str
    data: str
    occurred_at_ms: int
    attempt: int
    coalesced: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What one look at the schedule leased, and when the next delivery is due.

    Attributes:
        deliveries: the deliveries leased for one attempt each, earliest due first.
        next_due_ms: when the schedule's earliest entry is due after this claim (leased ones included), or None
            when the schedule is empty.
    """

    deliveries: list[Delivery]
    next_due_ms: int | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that was given up on."""

    dead_letter_id: str
    delivery_id: str
    provider_id: str
    type: str
    attempts: int
    last_error: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice for a user's clients.

    Attributes:
        user: the user's canonical address, or "" for every user.
        kind: the name of a ``parley.notification.v1.NoticeKind`` value.
        subject: provider id, address or report id.
        at_ms: when the event happened.
    """

    user: str
    kind: str
    subject: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """One event's id with the deliveries and notices it asks for, ready to be queued."""

    event_id: str
    deliveries: Sequence[NewDelivery]
    notices: Sequence[Notice]
    forget_push_token: tuple[str, int] | None = None
    """(user, device id) whose push token is to go: the device was removed."""
