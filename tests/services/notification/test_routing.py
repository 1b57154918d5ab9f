"""Routing a batch of events: what it reads is read once for the batch, and gives what routing one by one gives."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parley.common.v1.common_pb2 import ProviderStatus
from parley.events.v1.events_pb2 import Event, MessageWaiting, PreKeysLow
from parley_notification.routing import Lookups, Routed, Router
from parley_runtime.auth import ProviderRecord

APPROVED = ProviderStatus.PROVIDER_STATUS_APPROVED


class _Providers:
    def __init__(self, *provider_ids: str) -> None:
        key = Ed25519PrivateKey.generate().public_key()
        self.records = {p: ProviderRecord(p, APPROVED, key, frozenset()) for p in provider_ids}

    def get(self, provider_id: str) -> ProviderRecord | None:
        return self.records.get(provider_id)

    def all(self) -> list[ProviderRecord]:
        return sorted(self.records.values(), key=lambda record: record.provider_id)

    def suspend(self, provider_id: str) -> None:
        self.records[provider_id] = replace(self.records[provider_id], status=ProviderStatus.PROVIDER_STATUS_SUSPENDED)


class _Lookups:
    """Push tokens and webhooks in memory, counting the reads."""

    def __init__(self, tokens: dict[tuple[str, int], str], webhooks: set[str]) -> None:
        self.tokens = tokens
        self.webhooks = webhooks
        self.reads: list[str] = []

    async def providers_with_webhooks(self, provider_ids: Sequence[str]) -> list[str]:
        self.reads.append("webhooks")
        return [p for p in provider_ids if p in self.webhooks]

    async def push_token(self, user: str, device_id: int) -> str:
        self.reads.append("push_token")
        return self.tokens.get((user, device_id), "")

    async def push_tokens(self, devices: Sequence[tuple[str, int]]) -> list[str]:
        self.reads.append("push_tokens")
        return [self.tokens.get(device, "") for device in devices]


def _waiting(n: int, address: str) -> Event:
    return Event(event_id=f"e{n}", occurred_at_ms=1000 + n, message_waiting=MessageWaiting(address=address, pending=n))


def _events() -> list[Event]:
    return [
        _waiting(1, "username:alice@birdy/1"),
        _waiting(2, "username:bob@birdy/2"),
        _waiting(3, "username:carol@nowebhook/1"),
        Event(
            event_id="e4", occurred_at_ms=1004, prekeys_low=PreKeysLow(address="username:alice@birdy/1", remaining=3)
        ),
        _waiting(5, "not an address"),
        _waiting(6, "username:dave@unknown/1"),
    ]


def _world() -> tuple[_Providers, _Lookups]:
    tokens = {("username:alice@birdy", 1): "tok-a", ("username:carol@nowebhook", 1): "tok-c"}
    return _Providers("birdy", "nowebhook", "otter"), _Lookups(tokens, {"birdy", "otter"})


async def _route_each(router: Router, events: Sequence[Event], looked_up: Lookups | None = None) -> list[Routed | str]:
    routed: list[Routed | str] = []
    for event in events:
        try:
            routed.append(await router.route(event) if looked_up is None else await router.route(event, looked_up))
        except ValueError:
            routed.append("unroutable")
    return routed


async def test_a_batch_reads_push_tokens_and_webhooks_once_and_routes_as_one_by_one() -> None:
    providers, lookups = _world()
    alone = await _route_each(Router(providers, lookups), _events())
    assert lookups.reads.count("push_token") == 5  # one by one: a read per well-formed device event

    providers, lookups = _world()
    router = Router(providers, lookups)
    looked_up = await router.look_up(_events())
    batched = await _route_each(router, _events(), looked_up)
    assert lookups.reads == ["push_tokens", "webhooks"]
    assert batched == alone
    first, no_webhook = batched[0], batched[2]
    assert isinstance(first, Routed)
    assert json.loads(first.deliveries[0].data)["push_token"] == "tok-a"
    assert isinstance(no_webhook, Routed)
    assert no_webhook.deliveries == []
    assert batched[4] == "unroutable"


async def test_a_provider_suspended_after_the_batch_was_looked_up_gets_nothing() -> None:
    providers, lookups = _world()
    router = Router(providers, lookups)
    looked_up = await router.look_up(_events()[:1])
    providers.suspend("birdy")
    routed = await router.route(_events()[0], looked_up)
    assert routed.deliveries == []


async def test_an_event_the_batch_did_not_look_up_is_read_alone() -> None:
    providers, lookups = _world()
    router = Router(providers, lookups)
    looked_up = await router.look_up(_events()[:1])
    lookups.reads.clear()
    routed = await router.route(_waiting(7, "username:erin@otter/1"), looked_up)
    assert [d.provider_id for d in routed.deliveries] == ["otter"]
    assert lookups.reads == ["push_token", "webhooks"]


@pytest.mark.parametrize("events", [[], [Event(event_id="x")]])
async def test_a_batch_without_device_events_reads_nothing(events: list[Event]) -> None:
    providers, lookups = _world()
    await Router(providers, lookups).look_up(events)
    assert lookups.reads == []
