"""The replica's hint subscription: streams are woken when hints may have been lost, without waiting for a poll."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from parley_relay import hub as hub_module
from parley_relay.hub import MailboxHub, WakeFlag
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


async def test_bursts_of_streams_opening_at_once_all_register_and_leave_nothing_behind(redis_url: str) -> None:
    """Thousands of streams opening at once share the one hint connection: none may fail, and once they close no
    presence mark or subscription stays behind (a leftover mark makes the relay believe the device online)."""
    client = connect(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    hub = MailboxHub(client, RedisMailboxStore(client), replica="r1")
    await hub.start()
    devices = [(f"username:u{index}@birdy", 1) for index in range(2000)]
    for _burst in range(3):
        outcomes = await asyncio.gather(*(hub.register(user, d) for user, d in devices), return_exceptions=True)
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert errors == []
        assert len(await admin.pubsub_channels("mbox:*")) == len(devices)
        assert len([key async for key in admin.scan_iter("presence:*", count=1000)]) == len(devices)
        listeners = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        await asyncio.gather(*(hub.unregister(u, d, lst) for (u, d), lst in zip(devices, listeners, strict=True)))
        assert await admin.pubsub_channels("mbox:*") == []
        assert [key async for key in admin.scan_iter("presence:*", count=1000)] == []
    await hub.stop()
    await admin.aclose()
    await client.aclose()


async def test_a_failed_registration_leaves_nothing_behind(redis_url: str) -> None:
    """A device that cannot be marked present fails its stream and every other stream of it opening meanwhile,
    and nothing keeps it marked present afterwards (the presence refresher must not know it)."""
    client = connect(redis_url)
    admin = aioredis.Redis.from_url(redis_url)

    class FlakyStore(RedisMailboxStore):
        async def mark_present(self, devices: Sequence[tuple[str, int]], replica: str, ttl_ms: int) -> None:
            if devices == [(USER, 1)]:  # the registration's own mark; the refresher's marks go through
                raise RedisConnectionError("Redis went away")
            await super().mark_present(devices, replica, ttl_ms)

    hub = MailboxHub(client, FlakyStore(client), replica="r1", presence_ttl_ms=300)
    await hub.start()
    outcomes = await asyncio.gather(hub.register(USER, 1), hub.register(USER, 1), return_exceptions=True)
    assert all(isinstance(outcome, RedisError) for outcome in outcomes)
    await asyncio.sleep(0.5)  # several refresh rounds (every 0.1 s)
    assert await admin.get(f"presence:{{{USER}}}:1") is None
    assert await admin.pubsub_channels("mbox:*") == []
    await hub.stop()
    await admin.aclose()
    await client.aclose()


async def test_streams_cancelled_while_leaving_neither_cut_the_others_nor_stay_present(redis_url: str) -> None:
    """A stream's task is cancelled when its client goes away; redis-py drops a connection whose command was cut
    mid-write, so a stream must never write on the shared subscription itself (it used to: every stream of the
    replica lost its hints, and the next write failed with "'NoneType' object has no attribute 'writelines'")."""
    client = connect(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    hub = MailboxHub(client, RedisMailboxStore(client), replica="r1")
    await hub.start()
    await hub.register(USER, 99)
    before = await admin.client_list(_type="pubsub")
    leaving = [(f"username:l{index}@birdy", await hub.register(f"username:l{index}@birdy", 1)) for index in range(200)]
    tasks = [asyncio.create_task(hub.unregister(user, 1, listener)) for user, listener in leaving]
    await asyncio.sleep(0)  # each has started leaving
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [o for o in outcomes if o is not None and not isinstance(o, asyncio.CancelledError)] == []
    staying = ([f"mbox:{{{USER}}}:99:hint".encode()], [f"presence:{{{USER}}}:99".encode()])
    for _ in range(200):  # the leavers' unsubscriptions and presence marks finish in the background
        now = (await admin.pubsub_channels("mbox:*"), [key async for key in admin.scan_iter("presence:*")])
        if now == staying:
            break
        await asyncio.sleep(0.05)
    assert now == staying
    # The one subscription connection was never dropped.
    assert [c["id"] for c in await admin.client_list(_type="pubsub")] == [c["id"] for c in before]
    await hub.stop()
    await admin.aclose()
    await client.aclose()


async def test_a_wake_flag_wakes_its_one_waiter_or_lets_it_poll() -> None:
    flag = WakeFlag()
    assert await flag.wait(0.01) is False  # the stream's safety-net poll: nothing woke it
    waiter = asyncio.create_task(flag.wait(60))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await flag.wait()  # a stream is its flag's only waiter
    flag.set()
    async with asyncio.timeout(10):
        assert await waiter is True
    assert await flag.wait() is True  # still set: returns at once
    flag.clear()
    assert not flag.is_set()


async def test_an_idle_device_costs_the_hub_under_a_kib(redis_url: str) -> None:
    """What the hub keeps per device streamed to is paid for every connected device, most of them idle (issue 14:
    an idle device within 10 % of the bare transport's memory). It used to keep two ``asyncio.Event`` per device,
    each with a deque of waiters (2.3 KiB a device in all)."""
    client = connect(redis_url)
    hub = MailboxHub(client, RedisMailboxStore(client), replica="r1")
    await hub.start()
    devices = 1000
    tracemalloc.start(4)
    try:
        await asyncio.gather(*(hub.register(f"username:u{index}@birdy", 1) for index in range(devices)))
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = snapshot.filter_traces([tracemalloc.Filter(True, hub_module.__file__, all_frames=True)])
    per_device = sum(trace.size for trace in held.traces) / devices
    assert per_device < 1024
    await hub.stop()
    await client.aclose()
