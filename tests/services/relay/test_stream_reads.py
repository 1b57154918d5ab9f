"""A device stream reads its mailbox when something may be in it: after a hint, or while a read came back full,
not on every wake-up (acknowledgements and replies wake it too); and nothing waiting is ever left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from support.cluster import Cluster
from support.relay import raw_message, start_world

from parley_sdk import DeviceClient, RelayConnection


async def _xranges(redis_url: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    stats: dict[str, Any] = await client.info("commandstats")
    await client.aclose()
    return int(stats.get("cmdstat_xrange", {}).get("calls", 0))


async def _receive(stream: RelayConnection) -> tuple[str, str]:
    async with asyncio.timeout(10):
        incoming = await stream.receive()
    return incoming.stanza.id, incoming.delivery_id


async def test_a_caught_up_stream_reads_its_mailbox_once_per_hint(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    messages = 10
    async with ana.connect() as stream:
        await stream.drained.wait()
        before = await _xranges(redis_url)
        for index in range(messages):
            await ben.send(raw_message(ben.address, ana.user, [ana.address, laptop.address], f"m{index}"))
            message_id, delivery_id = await _receive(stream)
            assert message_id == f"m{index}"
            await stream.ack(delivery_id)
        # The last ack reaches the relay before the stream closes.
        await asyncio.sleep(0.2)
        reads = await _xranges(redis_url) - before
    # One read per hint (a message), and none for the acks; reading again after each short read would be 2-3 each.
    assert messages <= reads <= messages + 2
    await world.close()


async def test_stanzas_stored_while_the_window_is_full_arrive_once_acknowledged(cluster: Cluster) -> None:
    world = await start_world(cluster, stream_window=2)
    ana, laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    async with ana.connect() as stream:
        await stream.drained.wait()
        for index in range(5):
            await ben.send(raw_message(ben.address, ana.user, [ana.address, laptop.address], f"w{index}"))
        received: list[str] = []
        while len(received) < 5:
            # At most the window arrives before the device acknowledges; the rest waits in the mailbox, hinted
            # while the window was full, and must still come.
            batch = [await _receive(stream) for _ in range(min(2, 5 - len(received)))]
            received += [message_id for message_id, _ in batch]
            await stream.ack(*(delivery_id for _, delivery_id in batch))
    assert received == [f"w{index}" for index in range(5)]
    await world.close()


async def test_a_stream_opened_on_a_backlog_larger_than_a_read_delivers_all_of_it(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana, laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    count = 300  # more than one read's batch
    await asyncio.gather(
        *(ben.send(raw_message(ben.address, ana.user, [ana.address, laptop.address], f"b{i}")) for i in range(count))
    )
    device: DeviceClient = laptop
    async with device.connect() as stream:
        seen: set[str] = set()
        while len(seen) < count:
            message_id, delivery_id = await _receive(stream)
            seen.add(message_id)
            await stream.ack(delivery_id)
        await stream.drained.wait()
    assert seen == {f"b{i}" for i in range(count)}
    await world.close()
