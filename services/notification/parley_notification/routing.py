"""Which provider's webhook and which user's clients hear of an event, and what they are told. No I/O of its own.

Each event becomes at most one delivery per provider and notices for the users concerned. Payloads carry
addresses, provider ids, push tokens and counts: never message content, and never names (a provider's display
name included), so a webhook leaks nothing a provider does not already hold.

| event | webhook deliveries | notices |
|---|---|---|
| ``message_waiting`` | the device's provider, with its push token and ``alert``; coalesced per device and alert | — |
| ``prekeys_low`` | the device's provider, with its push token | the device's user |
| ``identity_key_changed`` | each provider of a recent requester, with its own requesters | each requester |
| ``provider_available`` | every other approved provider | every user |
| ``provider_status_changed`` | every other approved provider | — |
| ``report_resolved`` | the reporter's provider | the reporter |
| ``consent_changed`` | — (telling other providers would reveal whom a user allows) | — |
| ``device_removed`` | — (the device's push token is dropped) | — |

Only approved providers with a registered webhook receive deliveries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from parley.common.v1.common_pb2 import Feature, ProviderStatus
from parley.events.v1.events_pb2 import Event
from parley.notification.v1.notification_pb2 import NoticeKind
from parley_notification.model import NewDelivery, Notice
from parley_runtime.auth import ProviderRecord
from parley_stanza import Address, InvalidAddressError


class Providers(Protocol):
    """The provider directory as routing needs it (``parley_runtime.providers.ProviderCache``)."""

    def get(self, provider_id: str) -> ProviderRecord | None:
        """The provider, or None."""

    def all(self) -> list[ProviderRecord]:
        """Every provider, ordered by id."""


class RoutingLookups(Protocol):
    """The state routing reads (``store.NotificationStore`` implements it)."""

    async def providers_with_webhooks(self, provider_ids: Sequence[str]) -> list[str]:
        """The given providers that registered a webhook."""

    async def push_token(self, user: str, device_id: int) -> str:
        """The device's push token, or ""."""

    async def push_tokens(self, devices: Sequence[tuple[str, int]]) -> list[str]:
        """The push tokens of (user, device id) pairs, in order ("" where none), in one round trip."""


@dataclass(frozen=True, slots=True)
class Routed:
    """What one event turns into."""

    deliveries: list[NewDelivery]
    notices: list[Notice]
    forget_push_token: tuple[str, int] | None = None
    """(user, device id) whose push token is to go."""


@dataclass(frozen=True, slots=True)
class Lookups:
    """What routing a batch of events reads, read for the whole batch at once (see :meth:`Router.look_up`).

    Attributes:
        push_tokens: (user, device id) -> push token ("" when none) of the devices the batch's events name.
        reachable: the approved providers with a webhook among those the batch's device events name.
        asked: the providers whose reachability was looked up (``reachable`` answers only for these).
    """

    push_tokens: dict[tuple[str, int], str]
    reachable: frozenset[str]
    asked: frozenset[str]


_NOTHING_LOOKED_UP = Lookups({}, frozenset(), frozenset())

_DEVICE_EVENTS = ("message_waiting", "prekeys_low")
"""Events whose delivery goes to one device's provider with the device's push token."""


def delivery_id(event_id: str, provider_id: str) -> str:
    """The idempotency key of an event's delivery to one provider: stable, so re-reading the event repeats it."""
    return hashlib.sha256(f"{event_id}:{provider_id}".encode()).hexdigest()[:32]


def _json(data: Mapping[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _notice(user: str, kind: NoticeKind.ValueType, subject: str, at_ms: int) -> Notice:
    return Notice(user=user, kind=NoticeKind.Name(kind), subject=subject, at_ms=at_ms)


class Router:
    """Routes events to deliveries and notices.

    Args:
        providers: the provider directory (who is approved).
        lookups: webhooks and push tokens.
    """

    def __init__(self, providers: Providers, lookups: RoutingLookups) -> None:
        self._providers = providers
        self._lookups = lookups
        self._handlers: dict[str, Callable[[Event, Lookups], Awaitable[Routed]]] = {
            "message_waiting": self._message_waiting,
            "prekeys_low": self._prekeys_low,
            "identity_key_changed": self._identity_key_changed,
            "provider_available": self._provider_news,
            "provider_status_changed": self._provider_news,
            "report_resolved": self._report_resolved,
            "device_removed": self._device_removed,
        }

    async def look_up(self, events: Sequence[Event]) -> Lookups:
        """Reads what routing ``events`` needs in two round trips at most, instead of one or two per event: the
        push tokens of the devices they name and which of those devices' providers have a webhook.

        Events with a malformed address are skipped here; :meth:`route` refuses them.
        """
        devices: dict[tuple[str, int], None] = {}
        providers: dict[str, None] = {}
        for event in events:
            kind = event.WhichOneof("payload")
            if kind not in _DEVICE_EVENTS:
                continue
            try:
                device = _device(getattr(event, kind).address)
            except ValueError:
                continue
            assert device.device is not None
            devices[str(device.user), device.device] = None
            providers[device.provider] = None
        if not devices:
            return _NOTHING_LOOKED_UP
        keys = list(devices)
        tokens = await self._lookups.push_tokens(keys)
        reachable = await self._reachable(list(providers))
        return Lookups(dict(zip(keys, tokens, strict=True)), frozenset(reachable), frozenset(providers))

    async def route(self, event: Event, looked_up: Lookups = _NOTHING_LOOKED_UP) -> Routed:
        """The deliveries and notices ``event`` asks for (empty for events nobody is told of).

        Args:
            event: the event.
            looked_up: what :meth:`look_up` read for the batch the event is in; anything missing is read now.

        Raises:
            ValueError: the event names a malformed address (such an event can never be delivered).
        """
        handler = self._handlers.get(event.WhichOneof("payload") or "")
        return await handler(event, looked_up) if handler is not None else Routed([], [])

    async def _message_waiting(self, event: Event, looked_up: Lookups) -> Routed:
        waiting = event.message_waiting
        device = _device(waiting.address)
        alert = not waiting.silent
        data: dict[str, object] = {"address": str(device), "pending": waiting.pending, "alert": alert}
        data.update(await self._push_token(device, looked_up))
        # Silent and alerting wake-ups coalesce apart: merged, a muted chat's flood would either swallow an alert
        # or make the trailing wake-up alert for muted messages.
        coalesce = str(device) if alert else f"{device}#silent"
        providers = await self._device_provider(device, looked_up)
        return Routed(self._deliveries(event, providers, "message_waiting", data, coalesce=coalesce), [])

    async def _prekeys_low(self, event: Event, looked_up: Lookups) -> Routed:
        low = event.prekeys_low
        device = _device(low.address)
        data = {
            "address": str(device),
            "remaining": low.remaining,
            "remaining_pq": low.remaining_pq,
            "low_watermark": low.low_watermark,
        }
        data.update(await self._push_token(device, looked_up))
        notice = _notice(str(device.user), NoticeKind.NOTICE_KIND_PREKEYS_LOW, str(device), event.occurred_at_ms)
        providers = await self._device_provider(device, looked_up)
        return Routed(self._deliveries(event, providers, "prekeys_low", data), [notice])

    async def _report_resolved(self, event: Event, _looked_up: Lookups) -> Routed:
        report = event.report_resolved
        reporter = Address.parse(report.reporter).user
        data = {"report_id": report.report_id, "reporter": str(reporter), "outcome": report.outcome}
        notice = _notice(str(reporter), NoticeKind.NOTICE_KIND_REPORT_RESOLVED, report.report_id, event.occurred_at_ms)
        return Routed(await self._to(event, [reporter.provider], "report_resolved", data), [notice])

    async def _device_removed(self, event: Event, _looked_up: Lookups) -> Routed:
        removed = _device(event.device_removed.address)
        assert removed.device is not None
        return Routed([], [], forget_push_token=(str(removed.user), removed.device))

    async def _identity_key_changed(self, event: Event, _looked_up: Lookups) -> Routed:
        changed = event.identity_key_changed
        device = _device(changed.address)
        by_provider: dict[str, list[str]] = {}
        notices = []
        for text in changed.recent_requesters:
            try:
                requester = Address.parse(text).user
            except InvalidAddressError:
                continue  # one bad entry must not keep the others from hearing of the change
            by_provider.setdefault(requester.provider, []).append(str(requester))
            notices.append(
                _notice(str(requester), NoticeKind.NOTICE_KIND_IDENTITY_KEY_CHANGED, str(device), event.occurred_at_ms)
            )
        deliveries = []
        for provider_id in await self._reachable(sorted(by_provider)):
            data = {"address": str(device), "requesters": by_provider[provider_id]}
            deliveries += self._deliveries(event, [provider_id], "identity_key_changed", data)
        return Routed(deliveries, notices)

    async def _provider_news(self, event: Event, _looked_up: Lookups) -> Routed:
        kind = event.WhichOneof("payload")
        assert kind is not None
        notices = []
        data: dict[str, object]
        if kind == "provider_available":
            subject = event.provider_available.provider_id
            features = [Feature.Name(feature) for feature in event.provider_available.features]
            data = {"provider_id": subject, "features": features}
            notices.append(_notice("", NoticeKind.NOTICE_KIND_PROVIDER_AVAILABLE, subject, event.occurred_at_ms))
        else:
            change = event.provider_status_changed
            subject = change.provider_id
            data = {
                "provider_id": subject,
                "previous_status": ProviderStatus.Name(change.previous_status),
                "status": ProviderStatus.Name(change.status),
            }
        others = [record.provider_id for record in self._providers.all() if record.provider_id != subject]
        return Routed(await self._to(event, others, kind, data), notices)

    async def _push_token(self, device: Address, looked_up: Lookups) -> dict[str, object]:
        assert device.device is not None
        key = (str(device.user), device.device)
        token = looked_up.push_tokens.get(key)
        if token is None:
            token = await self._lookups.push_token(*key)
        return {"push_token": token} if token else {}

    async def _device_provider(self, device: Address, looked_up: Lookups) -> list[str]:
        """[the device's provider] when it is approved and has a webhook, else []."""
        if device.provider in looked_up.asked:
            # Looked up for the batch a moment ago; the provider directory is read again, so a suspension that
            # arrived meanwhile still counts (and every attempt checks it once more).
            record = self._providers.get(device.provider)
            approved = record is not None and record.status == ProviderStatus.PROVIDER_STATUS_APPROVED
            return [device.provider] if approved and device.provider in looked_up.reachable else []
        return await self._reachable([device.provider])

    async def _reachable(self, provider_ids: Sequence[str]) -> list[str]:
        """The approved providers among ``provider_ids`` that registered a webhook."""
        approved = []
        for provider_id in provider_ids:
            record = self._providers.get(provider_id)
            if record is not None and record.status == ProviderStatus.PROVIDER_STATUS_APPROVED:
                approved.append(provider_id)
        return await self._lookups.providers_with_webhooks(approved) if approved else []

    async def _to(
        self,
        event: Event,
        provider_ids: Sequence[str],
        kind: str,
        data: Mapping[str, object],
        *,
        coalesce: str | None = None,
    ) -> list[NewDelivery]:
        return self._deliveries(event, await self._reachable(provider_ids), kind, data, coalesce=coalesce)

    @staticmethod
    def _deliveries(
        event: Event,
        provider_ids: Sequence[str],
        kind: str,
        data: Mapping[str, object],
        *,
        coalesce: str | None = None,
    ) -> list[NewDelivery]:
        body = _json(data)
        return [
            NewDelivery(
                delivery_id=delivery_id(event.event_id, provider_id),
                provider_id=provider_id,
                type=kind,
                data=body,
                occurred_at_ms=event.occurred_at_ms,
                coalesce_key=coalesce,
            )
            for provider_id in provider_ids
        ]


def _device(text: str) -> Address:
    """A device address from an event.

    Raises:
        ValueError: not an address with a device (``InvalidAddressError`` is a ``ValueError``).
    """
    address = Address.parse(text)
    if address.device is None:
        raise ValueError("the address names no device")
    return address
