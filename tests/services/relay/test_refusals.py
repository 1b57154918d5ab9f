"""Bad input at the relay: each refusal has its status and reason, stores nothing, and the relay stays up."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import ADMIN, Cluster
from support.relay import World, raw_message, start_world, text

from parley.identity.v1 import identity_pb2 as id_pb
from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime import redis_keys
from parley_sdk import error_reason
from parley_stanza import Address, encode


async def _stored(redis_url: str, world: World) -> int:
    client = aioredis.Redis.from_url(redis_url)
    total = 0
    for device in world.devices.values():
        total += await client.xlen(redis_keys.mailbox(str(device.user), device.device_id))
    await client.aclose()
    return total


async def _send_raw(world: World, sender: str, data: bytes) -> grpc.aio.AioRpcError:
    device = world[sender]
    relay = relay_pb2_grpc.RelayServiceStub(world.cluster.channel("relay"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await relay.Send(
            pb.SendRequest(stanza=data), metadata=device.backend.credentials(str(device.user), device.device_id)
        )
    return error.value


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<message xmlns="urn:parley:stanza:1">&lol2;</message>"""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "MALFORMED_STANZA"),
        (b"<message", "MALFORMED_STANZA"),
        (BILLION_LAUGHS, "MALFORMED_STANZA"),
        (b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://example.com/x.dtd"><x/>', "MALFORMED_STANZA"),
        (b"<a>" * 10_000 + b"</a>" * 10_000, "TOO_LARGE"),
        (b"<m>" + b"x" * 300_000 + b"</m>", "TOO_LARGE"),
    ],
    ids=["empty", "truncated", "billion-laughs", "external-entity", "deep", "oversize"],
)
async def test_hostile_stanzas_are_refused(cluster: Cluster, redis_url: str, data: bytes, reason: str) -> None:
    world = await start_world(cluster)
    error = await _send_raw(world, "ben", data)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error)[0] == reason
    assert await _stored(redis_url, world) == 0
    # The relay stays up and other traffic continues.
    await world["ben"].send_content(world["ana_phone"].user, text("still fine"))
    assert await _stored(redis_url, world) == 2
    await world.close()


async def test_spoofed_sender_is_refused(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, ben, cleo = world["ana_phone"], world["ben"], world["cleo_phone"]
    forged = raw_message(cleo.address, ana.user, [ana.address, world["ana_laptop"].address])
    error = await _send_raw(world, "ben", encode(forged))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(error)[0] == "SPOOFED_SENDER"
    assert await _stored(redis_url, world) == 0
    assert ben.address != cleo.address
    await world.close()


async def test_unknown_recipient_and_unreachable_recipients_look_the_same(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ben = world["ben"]
    ghost = Address.parse("username:ghost@gatekeeper")
    gatekeeper = world.backends["gatekeeper"]
    # Shy is registered but never opted in.
    await gatekeeper.identity.RegisterUser(
        id_pb.RegisterUserRequest(), metadata=gatekeeper.credentials("username:shy@gatekeeper")
    )
    answers = []
    for target in (ghost, Address.parse("username:shy@gatekeeper")):
        error = await _send_raw(world, "ben", encode(raw_message(ben.address, target, [target.with_device(1)])))
        answers.append((error.code(), error_reason(error)[0], error.details()))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert await _stored(redis_url, world) == 0
    await world.close()


async def test_missing_and_stale_devices_are_named(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    stale = ana.user.with_device(9)
    error = await _send_raw(world, "ben", encode(raw_message(ben.address, ana.user, [ana.address, stale])))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, metadata = error_reason(error)
    assert reason == "STALE_DEVICES"
    assert metadata["missing_devices"] == str(world["ana_laptop"].address)
    assert metadata["stale_devices"] == str(stale)
    assert await _stored(redis_url, world) == 0
    await world.close()


async def test_read_only_chat_after_the_recipient_opts_out(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster, recipient_cache_s=0)
    ana, ben = world["ana_phone"], world["ben"]
    await ben.send_content(ana.user, text("before"))
    before = await _stored(redis_url, world)
    await ana.backend.identity.DisableThirdPartyChats(
        id_pb.DisableThirdPartyChatsRequest(), metadata=ana.backend.credentials(str(ana.user))
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ben.send_content(ana.user, text("after"))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error.value)[0] == "READ_ONLY_CHAT"
    assert await _stored(redis_url, world) == before
    await world.close()


async def test_expired_and_replayed_credentials_are_refused(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster, sessions=False)  # one-time assertions, the credential that can be replayed
    ben = world["ben"]
    relay = relay_pb2_grpc.RelayServiceStub(world.cluster.channel("relay"))
    message = encode(await ben.encrypt(world["ana_phone"].user, text("x")))
    credentials = ben.backend.credentials(str(ben.user), ben.device_id)
    await relay.Send(pb.SendRequest(stanza=message), metadata=credentials)
    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await relay.Send(pb.SendRequest(stanza=message), metadata=credentials)
    assert replayed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(replayed.value)[0] == "TOKEN_REPLAYED"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await relay.Send(pb.SendRequest(stanza=message))
    assert error_reason(missing.value)[0] == "TOKEN_MISSING"
    assert await _stored(redis_url, world) == 2
    await world.close()


async def test_suspending_a_provider_closes_its_open_streams(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben = world["ben"]
    async with ben.connect() as stream:
        await stream.drained.wait()
        await world.cluster.identity().SuspendProvider(
            id_pb.SuspendProviderRequest(provider_id="birdy"), metadata=ADMIN
        )
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async with asyncio.timeout(5):
                await stream.receive()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(error.value)[0] == "PROVIDER_SUSPENDED"
    # Provider changes wake open streams: far sooner than the 30 s safety-net poll.
    assert time.monotonic() - started < 5
    await world.close()


async def test_streams_per_provider_are_bounded(cluster: Cluster) -> None:
    world = await start_world(cluster, max_streams_per_provider=1)
    async with world["cleo_phone"].connect() as first:
        await first.drained.wait()
        async with world["ben"].connect() as second:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                async with asyncio.timeout(5):
                    await second.receive()
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(error.value)[0] == "QUOTA_EXCEEDED"
        # Another provider is not affected.
        async with world["ana_phone"].connect() as other:
            await asyncio.wait_for(other.drained.wait(), 5)
    await world.close()


async def test_an_oversized_frame_is_refused_whole_and_the_stream_goes_on(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    devices = [ana.address, world["ana_laptop"].address]
    frame = [encode(raw_message(ben.address, ana.user, devices, f"big-{i}")) for i in range(101)]
    async with ben.connect() as stream:
        refused = (await stream.send(frame)).results
        assert len(refused) == 101
        assert {(r.code, r.reason, r.metadata["limit"]) for r in refused} == {(3, "BATCH_TOO_LARGE", "100")}
        assert await _stored(redis_url, world) == 0
        accepted = (await stream.send(frame[:100])).results
    assert [r.code for r in accepted] == [0] * 100
    assert await _stored(redis_url, world) == 200
    await world.close()
