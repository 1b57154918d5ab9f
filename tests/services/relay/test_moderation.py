"""Moderation on the relay's stream path: one ``SendBatch`` frame is decided by one ``CheckSendBatch`` call.

Per stanza the relay must keep moderation's verdict: allowed stanzas are stored, a blocked sender's stanza is
accepted but reaches nobody, a rate-limited one is refused with its own status, reason and limit, and when
moderation cannot be reached every stanza of the frame is refused as retryable while the stream stays up.
"""

from __future__ import annotations

import asyncio
import base64

import redis.asyncio as aioredis
from support.cluster import Cluster
from support.moderation import FRANKING_KEY, NO_REFILL, start_moderation
from support.relay import World, start_world, text

from parley.moderation.v1 import moderation_pb2 as mod_pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_runtime import redis_keys
from parley_runtime.testing import free_port
from parley_sdk import DeviceClient
from parley_stanza import Message, encode


async def _start(
    cluster: Cluster, **moderation_overrides: object
) -> tuple[moderation_pb2_grpc.ModerationServiceStub, World]:
    await cluster.start_identity()
    moderation = await start_moderation(cluster, **moderation_overrides)
    world = await start_world(
        cluster, moderation_target=cluster.target("moderation"), franking_key=base64.b64encode(FRANKING_KEY).decode()
    )
    return moderation, world


async def _mailbox(redis_url: str, device: DeviceClient) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return int(await client.xlen(redis_keys.mailbox(str(device.user), device.device_id)))
    finally:
        await client.aclose()


async def _bodies(device: DeviceClient, count: int) -> list[str]:
    """Receives, decrypts and acknowledges ``count`` messages."""
    bodies: list[str] = []
    async with device.connect() as connection:
        async with asyncio.timeout(10):
            while len(bodies) < count:
                incoming = await connection.receive()
                await connection.ack(incoming.delivery_id)
                if isinstance(incoming.stanza, Message):
                    bodies.append(device.decrypt(incoming.stanza).content.text.body)
    return bodies


async def test_a_frame_keeps_each_stanzas_verdict(cluster: Cluster, redis_url: str) -> None:
    moderation, world = await _start(cluster)
    ben, ana, cleo = world["ben"], world["ana_phone"], world["cleo_phone"]
    await moderation.Block(
        mod_pb.BlockRequest(address=str(ben.user)),
        metadata=world.backends["birdy"].credentials(str(cleo.user)),
    )
    stanzas = [
        encode(await ben.encrypt(ana.user, text("one"))),
        encode(await ben.encrypt(cleo.user, text("blocked"))),
        encode(await ben.encrypt(ana.user, text("two"))),
    ]
    async with ben.connect() as connection:
        results = await connection.send(stanzas)
    # The blocked sender is not told: all three are accepted alike.
    assert [r.code for r in results.results] == [0, 0, 0]
    assert all(r.server_timestamp_ms > 0 and not r.duplicate for r in results.results)
    assert await _mailbox(redis_url, world["cleo_phone"]) == 0
    assert await _mailbox(redis_url, world["cleo_tablet"]) == 0
    assert await _mailbox(redis_url, world["ana_laptop"]) == 2
    assert await _bodies(ana, 2) == ["one", "two"]
    await world.close()


async def test_a_flooding_sender_is_refused_one_by_one_and_others_go_on(cluster: Cluster, redis_url: str) -> None:
    _, world = await _start(cluster, send_burst=3, send_per_second=NO_REFILL)
    ben, cleo, ana = world["ben"], world["cleo_phone"], world["ana_phone"]
    stanzas = [encode(await ben.encrypt(ana.user, text(f"m{i}"))) for i in range(20)]
    async with ben.connect() as connection:
        results = (await connection.send(stanzas)).results
    assert [r.code for r in results[:3]] == [0, 0, 0]
    for refused in results[3:]:
        assert refused.code == 8  # RESOURCE_EXHAUSTED
        assert refused.reason == "RATE_LIMITED"
        assert refused.metadata["limit"] == "sender"
    # Another user of the same provider has buckets of her own.
    await cleo.send_content(ana.user, text("from cleo"))
    assert await _mailbox(redis_url, world["ana_laptop"]) == 4
    assert await _bodies(ana, 4) == ["m0", "m1", "m2", "from cleo"]
    assert await _mailbox(redis_url, ana) == 0
    await world.close()


async def test_unreachable_moderation_refuses_the_frame_as_retryable_and_the_stream_stays_up(
    cluster: Cluster, redis_url: str
) -> None:
    world = await start_world(cluster, moderation_target=f"127.0.0.1:{free_port()}")
    ben, ana = world["ben"], world["ana_phone"]
    async with ben.connect() as connection:
        for attempt in range(2):
            stanzas = [encode(await ben.encrypt(ana.user, text(f"{attempt}-{i}"))) for i in range(3)]
            results = (await connection.send(stanzas)).results
            assert [(r.code, r.reason) for r in results] == [(14, "DEPENDENCY_UNAVAILABLE")] * 3  # UNAVAILABLE
    assert await _mailbox(redis_url, ana) == 0
    assert await _mailbox(redis_url, world["ana_laptop"]) == 0
    await world.close()
