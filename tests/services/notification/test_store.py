"""The Redis store's batched reads and replies: what the delivery worker and intake rely on to save round trips."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from parley_notification.model import NewDelivery, RoutedEvent, Webhook
from parley_notification.store import RedisNotificationStore
from parley_runtime.redis_client import Redis, connect


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


async def _calls(client: Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _queue(store: RedisNotificationStore, *ids: str) -> None:
    deliveries = [NewDelivery(i, "birdy", "message_waiting", json.dumps({"n": i}), 1) for i in ids]
    await store.take_events(
        [RoutedEvent(f"e-{i}", [d], []) for i, d in zip(ids, deliveries, strict=True)],
        now_ms=1_000,
        seen_ttl_ms=60_000,
        coalesce_window_ms=0,
        notices_maxlen=100,
    )


async def test_a_claim_says_when_the_next_delivery_is_due(client: Redis) -> None:
    store = RedisNotificationStore(client)
    assert (await store.claim_due(1_000, 5_000, 10)).next_due_ms is None
    await _queue(store, "d1", "d2")
    await client.zadd("notify:{queue}:due", {"d2": 4_000})  # as a retry due later
    claim = await store.claim_due(2_000, 5_000, 10)
    assert [d.delivery_id for d in claim.deliveries] == ["d1"]
    assert claim.next_due_ms == 4_000
    claim = await store.claim_due(4_000, 5_000, 10)
    assert [d.delivery_id for d in claim.deliveries] == ["d2"]
    assert claim.next_due_ms == 7_000  # d1's lease runs out first
    assert await store.finish(["d1", "d2", "d1"]) == [True, True, False]
    assert (await store.claim_due(9_000, 5_000, 10)).next_due_ms is None
    assert await store.queue_depth() == {}


async def test_push_tokens_are_read_in_order_in_one_round_trip(client: Redis) -> None:
    store = RedisNotificationStore(client)
    await store.set_push_token("username:alice@birdy", 1, "tok-a1")
    await store.set_push_token("username:bob@birdy", 2, "tok-b2")
    devices = [("username:bob@birdy", 2), ("username:alice@birdy", 2), ("username:alice@birdy", 1)]
    assert await store.push_tokens(devices) == ["tok-b2", "", "tok-a1"]
    assert await store.push_tokens([]) == []


async def test_webhooks_are_looked_up_together_and_the_found_ones_reused(client: Redis) -> None:
    clock = _Clock()
    store = RedisNotificationStore(client, webhook_cache_s=1.0, clock=clock)
    other = RedisNotificationStore(client)  # another replica
    await other.set_webhook("birdy", Webhook("https://birdy.example/hook", b"s" * 32), 1)
    await other.set_webhook("otter", Webhook("https://otter.example/hook", b"o" * 32), 1)

    before = await _calls(client, "hmget")
    assert await store.providers_with_webhooks(["otter", "nohook", "birdy", "otter"]) == ["otter", "birdy", "otter"]
    assert await _calls(client, "hmget") - before == 3  # one pipeline: otter, nohook, birdy
    before = await _calls(client, "hmget")
    assert await store.providers_with_webhooks(["birdy", "nohook"]) == ["birdy"]
    assert await _calls(client, "hmget") - before == 1  # birdy reused; a provider without one is asked again

    # A webhook registered through another replica is used here once the cache runs out, within a second.
    await other.set_webhook("nohook", Webhook("https://nohook.example/hook", b"n" * 32), 2)
    assert await store.providers_with_webhooks(["nohook"]) == ["nohook"]
    await client.delete("webhook:{birdy}")
    assert await store.providers_with_webhooks(["birdy"]) == ["birdy"]
    clock.now += 1.0
    assert await store.providers_with_webhooks(["birdy"]) == []


async def test_attempts_missing_the_cache_together_read_the_webhook_once(client: Redis) -> None:
    clock = _Clock()
    store = RedisNotificationStore(client, webhook_cache_s=1.0, clock=clock)
    webhook = Webhook("https://birdy.example/hook", b"s" * 32)
    await store.set_webhook("birdy", webhook, 1)
    before = await _calls(client, "hmget")
    assert await asyncio.gather(*(store.webhook("birdy") for _ in range(20))) == [webhook] * 20
    assert await _calls(client, "hmget") - before == 1
    clock.now += 1.0
    assert await asyncio.gather(*(store.webhook("birdy") for _ in range(20))) == [webhook] * 20
    assert await _calls(client, "hmget") - before == 2
