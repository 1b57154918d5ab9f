"""Crash safety: events read but not acknowledged, and attempts cut short, are taken over by another replica."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from support.cluster import Cluster, ProviderKeys
from support.notification import (
    WebhookReceiver,
    drained,
    message_waiting,
    publish,
    register_webhook,
    start_notification,
)

from parley_notification.model import NewDelivery, RoutedEvent, Webhook
from parley_notification.store import RedisNotificationStore
from parley_runtime.redis_client import Redis, connect
from parley_runtime.testing import RedisServer

DEVICES = [f"username:user{n}@birdy/1" for n in range(12)]


async def _setup(cluster: Cluster) -> ProviderKeys:
    await cluster.start_identity()
    return await cluster.enlist("birdy")


async def _set_webhook(client: Redis, keys: ProviderKeys, url: str) -> None:
    """Stores ``keys``' provider's webhook as RegisterWebhook would, with no notification service running yet."""
    webhook = Webhook(url=url, secret=secrets.token_bytes(32))
    await RedisNotificationStore(client).set_webhook(keys.provider_id, webhook, _now_ms())


async def test_events_a_dead_consumer_read_are_reclaimed(cluster: Cluster) -> None:
    receiver = WebhookReceiver()
    client = aioredis.Redis.from_url(cluster.redis_url)
    try:
        birdy = await _setup(cluster)
        await client.xgroup_create("events:{relay}", "notification", id="0", mkstream=True)
        await publish(cluster.redis_url, "relay", *(message_waiting(device) for device in DEVICES[:5]))
        # A replica reads the events and dies before taking them in: they stay pending under its name.
        read = await client.xreadgroup("notification", "crashed", {"events:{relay}": ">"}, count=10)
        assert len(read[0][1]) == 5

        # The webhook is in place before the service starts: it reclaims the events 200 ms after they were read,
        # and a slow start-up must not let it route them to a provider with no webhook yet.
        await _set_webhook(client, birdy, await receiver.start())
        await start_notification(cluster, reclaim_idle_ms=200)
        await drained(cluster.redis_url, "identity")
        await receiver.wait_for(lambda: len(receiver.accepted) == 5)
        assert {r.document["data"]["address"] for r in receiver.accepted} == set(DEVICES[:5])
        await drained(cluster.redis_url, "relay")
    finally:
        await client.aclose()
        await receiver.stop()


async def test_an_attempt_cut_short_is_made_again_under_the_same_key(cluster: Cluster) -> None:
    receiver = WebhookReceiver()
    client = connect(cluster.redis_url)
    try:
        birdy = await _setup(cluster)
        store = RedisNotificationStore(client)
        delivery = NewDelivery("k" * 32, "birdy", "message_waiting", json.dumps({"address": DEVICES[0]}), 1)
        await store.take_events(
            [RoutedEvent("e1", [delivery], [])], now_ms=1, seen_ttl_ms=60_000, coalesce_window_ms=0, notices_maxlen=100
        )
        # A worker claims it (a lease until 300 ms from now) and dies mid-attempt.
        [claimed] = (await store.claim_due(_now_ms(), 300, 10)).deliveries
        assert claimed.attempt == 1

        await _set_webhook(client, birdy, await receiver.start())
        await start_notification(cluster)
        await receiver.wait_for(lambda: len(receiver.accepted) == 1)
        [request] = receiver.accepted
        assert request.key == "k" * 32
        assert request.headers["Parley-Attempt"] == "2"
    finally:
        await client.aclose()
        await receiver.stop()


async def test_a_replica_stopped_mid_way_loses_nothing(cluster: Cluster) -> None:
    async def slowish(_request: object, _index: int) -> int:
        await asyncio.sleep(0.1)
        return 200

    receiver = WebhookReceiver(behaviour=slowish)
    try:
        birdy = await _setup(cluster)
        settings = {"reclaim_idle_ms": 300, "delivery_lease_ms": 1200, "delivery_concurrency": 1}
        await start_notification(cluster, "notification-a", **settings)
        await drained(cluster.redis_url, "identity")
        await register_webhook(cluster, birdy, await receiver.start(), "notification-a")
        await publish(cluster.redis_url, "relay", *(message_waiting(device) for device in DEVICES))
        await receiver.wait_for(lambda: len(receiver.accepted) >= 3)
        replica_a = cluster.servers.pop("notification-a")
        await replica_a.stop(0)
        assert len(receiver.accepted) < len(DEVICES), "replica A finished before it was stopped; nothing tested"

        await start_notification(cluster, "notification-b", **settings)
        await receiver.wait_for(lambda: {r.document["data"]["address"] for r in receiver.accepted} == set(DEVICES))
        keys_by_address: dict[str, set[str]] = {}
        for request in receiver.received:
            keys_by_address.setdefault(request.document["data"]["address"], set()).add(request.key)
        assert all(len(keys) == 1 for keys in keys_by_address.values())
        await drained(cluster.redis_url, "relay")
    finally:
        await receiver.stop()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_the_retry_schedule_survives_a_restart_of_redis_and_the_service(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, redis_server = own_redis_cluster
    failing = True

    async def behaviour(_request: object, _index: int) -> int:
        return 503 if failing else 200

    receiver = WebhookReceiver(behaviour=behaviour)
    try:
        birdy = await _setup(cluster)
        # Retries far apart, so the delivery sits in the schedule while everything restarts.
        settings = {"backoff_base_ms": 60_000, "backoff_max_ms": 60_000, "max_attempts": 5}
        await start_notification(cluster, **settings)
        await drained(cluster.redis_url, "identity")
        await register_webhook(cluster, birdy, await receiver.start())
        await publish(cluster.redis_url, "relay", message_waiting(DEVICES[0]))
        await receiver.wait_for(lambda: len(receiver.received) == 1)
        await cluster.close()

        redis_server.restart()
        client = aioredis.Redis.from_url(redis_server.url)
        schedule: Any = await client.zrange("notify:{queue}:due", 0, -1, withscores=True)
        [(delivery_id, due)] = schedule
        assert delivery_id.decode() == receiver.received[0].key
        # Make it due now, as the passing of time would.
        await client.zadd("notify:{queue}:due", {delivery_id: 0})
        await client.aclose()

        failing = False
        await cluster.start_identity()
        await start_notification(cluster, **settings)
        await receiver.wait_for(lambda: len(receiver.accepted) == 1)
        assert receiver.accepted[0].key == receiver.received[0].key
        assert receiver.accepted[0].headers["Parley-Attempt"] == "2"
        assert due > time.time() * 1000  # it was scheduled in the future, not lost or sent early
    finally:
        await receiver.stop()


async def test_the_service_rides_out_a_redis_restart(own_redis_cluster: tuple[Cluster, RedisServer]) -> None:
    cluster, redis_server = own_redis_cluster
    receiver = WebhookReceiver()
    try:
        birdy = await _setup(cluster)
        await start_notification(cluster)
        await drained(cluster.redis_url, "identity")
        await register_webhook(cluster, birdy, await receiver.start())
        await publish(cluster.redis_url, "relay", message_waiting(DEVICES[0]))
        await receiver.wait_for(lambda: len(receiver.accepted) == 1)

        redis_server.restart()  # the services keep running; their loops reconnect with backoff
        await publish(cluster.redis_url, "relay", message_waiting(DEVICES[1]))
        await receiver.wait_for(lambda: len(receiver.accepted) == 2)
        assert receiver.accepted[1].document["data"]["address"] == DEVICES[1]
    finally:
        await receiver.stop()


async def test_idle_consumers_without_pending_events_are_forgotten(cluster: Cluster) -> None:
    client = connect(cluster.redis_url)
    try:
        store = RedisNotificationStore(client)
        await store.ensure_group("events:{relay}", "notification")
        await client.xgroup_createconsumer("events:{relay}", "notification", "ghost")  # a replica gone, holding nothing
        await publish(cluster.redis_url, "relay", message_waiting(DEVICES[0]))
        assert len(await store.read_group("events:{relay}", "notification", "busy", 10, 1)) == 1
        await asyncio.sleep(0.01)

        assert await store.forget_consumers("events:{relay}", "notification", 0) == ["ghost"]
        consumers: Any = await client.xinfo_consumers("events:{relay}", "notification")
        assert [consumer["name"] for consumer in consumers] == [b"busy"]  # its pending event is not dropped
    finally:
        await client.aclose()


async def test_a_replica_restarted_under_its_name_resumes_its_own_pending_events(cluster: Cluster) -> None:
    receiver = WebhookReceiver()
    client = aioredis.Redis.from_url(cluster.redis_url)
    try:
        birdy = await _setup(cluster)
        await start_notification(cluster, "setup", consumer_name="setup")
        await register_webhook(cluster, birdy, await receiver.start(), "setup")
        await cluster.servers.pop("setup").stop(0)
        await publish(cluster.redis_url, "relay", *(message_waiting(device) for device in DEVICES[:3]))
        # The replica "pod-0" read the events and died before taking them in.
        await client.xreadgroup("notification", "pod-0", {"events:{relay}": ">"}, count=10)

        # Idle-time reclaim is an hour away: only its own pending list brings the events back.
        await start_notification(cluster, consumer_name="pod-0", reclaim_idle_ms=3_600_000)
        await receiver.wait_for(lambda: len(receiver.accepted) == 3)
        await drained(cluster.redis_url, "relay")
    finally:
        await client.aclose()
        await receiver.stop()
