"""Coalescing of one device's wake-ups: the intake script on a controlled clock, then end to end."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.cluster import Cluster
from support.notification import (
    WebhookReceiver,
    drained,
    message_waiting,
    publish,
    register_webhook,
    start_notification,
)

from parley_notification.model import NewDelivery, RoutedEvent
from parley_notification.store import MERGED, QUEUED_NOW, QUEUED_TRAILING, RedisNotificationStore
from parley_runtime.redis_client import connect

WINDOW_MS = 1000
DEVICE = "username:alice@birdy/1"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisNotificationStore]:
    client = connect(redis_url)
    yield RedisNotificationStore(client)
    await client.aclose()


async def _wake(store: RedisNotificationStore, n: int, now_ms: int, device: str = DEVICE) -> list[int] | None:
    delivery = NewDelivery(
        delivery_id=f"d{n}",
        provider_id="birdy",
        type="message_waiting",
        data=json.dumps({"address": device, "pending": n}),
        occurred_at_ms=now_ms,
        coalesce_key=device,
    )
    [outcomes] = await store.take_events(
        [RoutedEvent(f"e{n}", [delivery], [])],
        now_ms=now_ms,
        seen_ttl_ms=60_000,
        coalesce_window_ms=WINDOW_MS,
        notices_maxlen=100,
    )
    return outcomes


async def test_a_burst_becomes_one_wake_up_now_and_one_when_the_window_ends(store: RedisNotificationStore) -> None:
    assert await _wake(store, 1, 10_000) == [QUEUED_NOW]
    assert await _wake(store, 2, 10_100) == [QUEUED_TRAILING]
    for n in range(3, 11):
        assert await _wake(store, n, 10_100 + n) == [MERGED]
    assert await _wake(store, 11, 10_200, device="username:bob@birdy/1") == [QUEUED_NOW]  # devices are independent

    due_now = (await store.claim_due(10_500, 5_000, 100)).deliveries
    assert sorted(d.delivery_id for d in due_now) == ["d1", "d11"]
    [trailing] = (await store.claim_due(11_000, 5_000, 100)).deliveries
    assert trailing.delivery_id == "d2"
    assert trailing.coalesced == 8
    assert json.loads(trailing.data)["pending"] == 10  # the newest event's data
    assert trailing.occurred_at_ms == 10_110


async def test_a_steady_stream_gets_one_wake_up_per_window(store: RedisNotificationStore) -> None:
    assert await _wake(store, 1, 10_000) == [QUEUED_NOW]
    assert await _wake(store, 2, 10_500) == [QUEUED_TRAILING]  # due at 11_000, and the next window ends at 12_000
    await store.claim_due(11_000, 5_000, 100)
    # The trailing wake-up is in flight: a new event starts the next trailing one instead of merging into it.
    assert await _wake(store, 3, 11_100) == [QUEUED_TRAILING]
    assert await _wake(store, 4, 11_900) == [MERGED]
    assert [d.delivery_id for d in (await store.claim_due(11_999, 5_000, 100)).deliveries] == []
    [third] = (await store.claim_due(12_000, 5_000, 100)).deliveries
    assert (third.delivery_id, third.coalesced) == ("d3", 1)
    # After a quiet window the next event goes out at once.
    assert await _wake(store, 5, 20_000) == [QUEUED_NOW]


async def test_an_event_taken_in_twice_queues_once(store: RedisNotificationStore) -> None:
    assert await _wake(store, 1, 10_000) == [QUEUED_NOW]
    assert await _wake(store, 1, 10_001) is None
    assert len((await store.claim_due(10_002, 5_000, 100)).deliveries) == 1
    assert await store.queue_depth() == {"birdy": 1}


async def test_a_batch_is_taken_in_event_by_event(store: RedisNotificationStore) -> None:
    def event(n: int, device: str) -> RoutedEvent:
        data = json.dumps({"address": device, "pending": n})
        delivery = NewDelivery(f"d{n}", "birdy", "message_waiting", data, 10_000 + n, coalesce_key=device)
        return RoutedEvent(f"e{n}", [delivery], [])

    assert await _wake(store, 1, 9_000) == [QUEUED_NOW]
    batch = [event(1, DEVICE), event(2, DEVICE), RoutedEvent("e3", [], []), event(4, DEVICE), event(5, "u@b/2")]
    outcomes = await store.take_events(
        batch, now_ms=9_500, seen_ttl_ms=60_000, coalesce_window_ms=WINDOW_MS, notices_maxlen=100
    )
    assert outcomes == [None, [QUEUED_TRAILING], [], [MERGED], [QUEUED_NOW]]


async def test_many_messages_for_a_sleeping_device_wake_it_twice_at_most(
    cluster: Cluster, metric_reader: InMemoryMetricReader
) -> None:
    receiver = WebhookReceiver()
    try:
        await cluster.start_identity()
        birdy = await cluster.enlist("birdy")
        # A window far longer than the burst takes to publish and read, so the burst lands in one window.
        await start_notification(cluster, coalesce_window_ms=1500)
        await drained(cluster.redis_url, "identity")
        await register_webhook(cluster, birdy, await receiver.start())
        events = [message_waiting(DEVICE, pending=n) for n in range(1, 21)]
        for n, event in enumerate(events):
            event.occurred_at_ms = int(time.time() * 1000) + n  # distinct times: "newest" is well defined
        await publish(cluster.redis_url, "relay", *events)

        await receiver.wait_for(lambda: sum(1 + r.document["coalesced"] for r in receiver.accepted) == 20)
        # Two wake-ups: the first message at once, the other 19 together when the window ends. (A third would
        # only mean the machine stalled for longer than the window in the middle of the burst.)
        assert 2 <= len(receiver.accepted) <= 3
        assert receiver.accepted[0].document["coalesced"] == 0
        assert max(r.document["coalesced"] for r in receiver.accepted) >= 9
        assert receiver.accepted[-1].document["data"]["pending"] == 20
        assert len({r.key for r in receiver.accepted}) == len(receiver.accepted)
    finally:
        await receiver.stop()
    names = {
        metric.name
        for resource in metric_reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {
        "notification.coalesced",
        "notification.delivered",
        "notification.delivery.latency",
        "notification.attempt.duration",
        "notification.events",
        "notification.queue.depth",
    } <= names
