"""The replica's hint subscription: streams are woken when hints may have been lost, without waiting for a poll."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from parley_relay.hub import MailboxHub
from parley_relay.store import RedisMailboxStore
from parley_runtime.redis_client import connect

USER = "username:ann@birdy"


async def test_a_hint_wakes_only_its_devices_streams(redis_url: str) -> None:
    client = connect(redis_url)
    hub = MailboxHub(client, RedisMailboxStore(client), replica="r1")
    await hub.start()
    mine, other = await hub.register(USER, 1), await hub.register(USER, 2)
    async with asyncio.timeout(10):
        while not mine.wake.is_set():
            # Published until the subscription is live; a hint before it is simply not heard.
            await client.publish(f"mbox:{{{USER}}}:1:hint", b"")
            await asyncio.sleep(0.05)
    assert not other.wake.is_set()
    await hub.stop()
    await client.aclose()


async def test_streams_are_woken_when_the_hint_connection_comes_back(redis_url: str) -> None:
    client = connect(redis_url)
    hub = MailboxHub(client, RedisMailboxStore(client), replica="r1")
    await hub.start()
    listener = await hub.register(USER, 1)
    admin = aioredis.Redis.from_url(redis_url)
    listener.wake.clear()
    # Redis drops the subscriber: hints published meanwhile are lost, so the hub must wake every stream itself.
    killed = await admin.client_kill_filter(_type="pubsub")
    assert killed == 1
    async with asyncio.timeout(10):
        await listener.wake.wait()
    assert (await admin.pubsub_numsub(f"mbox:{{{USER}}}:1:hint".encode()))[0][1] == 1
    await hub.stop()
    await admin.aclose()
    await client.aclose()


async def test_a_provider_change_wakes_only_that_providers_streams(redis_url: str) -> None:
    client = connect(redis_url)
    hub = MailboxHub(client, RedisMailboxStore(client), replica="r1")
    await hub.start()
    birdy = await hub.register(USER, 1)
    # An email address holding "@birdy" inside its identifier still belongs to its last "@" part's provider.
    gatekeeper = await hub.register("email:ann@birdy.example@gatekeeper", 1)
    birdy.wake.clear()
    gatekeeper.wake.clear()
    hub.wake_provider("birdy")
    assert birdy.wake.is_set()
    assert not gatekeeper.wake.is_set()
    birdy.wake.clear()
    hub.wake_provider(None)  # a whole snapshot: anything may have changed
    assert birdy.wake.is_set()
    assert gatekeeper.wake.is_set()
    await hub.stop()
    await client.aclose()
