"""A recipient device's mailbox has a backlog cap (issue 10, item 3): past it, sends are refused with a reason the
sender can show, nothing is stored anywhere, and the recipient's provider is woken to drain it."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster
from support.relay import World, start_world, text

from parley.events.v1.events_pb2 import Event
from parley_runtime import redis_keys
from parley_sdk import DeviceClient, error_reason

CAP = 5


async def _lengths(redis_url: str, *devices: DeviceClient) -> list[int]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [await client.xlen(redis_keys.mailbox(str(d.user), d.device_id)) for d in devices]
    finally:
        await client.aclose()


async def _waiting(redis_url: str) -> list[tuple[str, int]]:
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{relay}")
    await client.aclose()
    events = [Event.FromString(fields[b"event"]) for _, fields in entries]
    return [(e.message_waiting.address, e.message_waiting.pending) for e in events]


async def _drain(device: DeviceClient, expected: int) -> list[str]:
    received: list[str] = []
    async with device.connect() as stream:
        async with asyncio.timeout(20):
            while len(received) < expected:
                incoming = await stream.receive()
                received.append(incoming.stanza.id)
                await stream.ack(incoming.delivery_id)
    return received


async def test_a_full_mailbox_refuses_changes_nothing_and_wakes_the_recipient(cluster: Cluster, redis_url: str) -> None:
    world: World = await start_world(cluster, max_backlog=CAP)
    ana, laptop = world["ana_phone"], world["ana_laptop"]
    cleo, tablet = world["cleo_phone"], world["cleo_tablet"]
    for index in range(CAP):
        await cleo.send_content(ana.user, text(f"m{index}"), message_id=f"m{index}")
    assert await _lengths(redis_url, ana, laptop, tablet) == [CAP, CAP, CAP]

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cleo.send_content(ana.user, text("one too many"), message_id="over")
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata = error_reason(error.value)
    assert reason == "MAILBOX_FULL"
    assert metadata["limit"] == str(CAP)
    assert metadata["device"] in {str(ana.address), str(laptop.address)}
    # Nothing stored: not for Ana's devices, and Cleo's tablet's copy was taken back.
    assert await _lengths(redis_url, ana, laptop, tablet) == [CAP, CAP, CAP]
    # The full device's provider is woken, with the backlog it has to drain.
    assert (metadata["device"], CAP) in await _waiting(redis_url)

    # Drained, the same message goes through (its id was never marked as accepted).
    assert await _drain(ana, CAP) == [f"m{index}" for index in range(CAP)]
    assert await _drain(laptop, CAP) == [f"m{index}" for index in range(CAP)]
    await cleo.send_content(ana.user, text("one too many"), message_id="over")
    assert await _drain(ana, 1) == ["over"]
    assert await _lengths(redis_url, laptop, tablet) == [1, CAP + 1]
    await world.close()
