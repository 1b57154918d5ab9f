"""Only registered users and devices act at the relay and the key directory (issue 10, item 1).

A provider's assertion is enough to prove the provider speaks for a user, but not that the user exists: identities
it minted itself (`sub=username:ghost@birdy`, or `dev=42` of a real user) must be refused before anything is
stored, or limits kept per sender would be walked around by minting senders.
"""

from __future__ import annotations

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster
from support.relay import World, raw_message, start_world

from parley.identity.v1 import identity_pb2 as id_pb
from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley.keydir.v1 import keydir_pb2_grpc
from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime import redis_keys
from parley_sdk import error_reason
from parley_stanza import Address, encode

GHOST = Address.parse("username:ghost@birdy")


async def _mailbox_lengths(redis_url: str, world: World) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return sum([await client.xlen(redis_keys.mailbox(str(d.user), d.device_id)) for d in world.devices.values()])
    finally:
        await client.aclose()


def _ghost_devices(world: World) -> list[tuple[Address, int]]:
    """A user never registered, and a device never registered of a real user."""
    return [(GHOST, 1), (world["ben"].user, 42)]


async def test_relay_send_refuses_unregistered_senders(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana = world["ana_phone"]
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    birdy = world.backends["birdy"]
    reasons = []
    for user, device_id in _ghost_devices(world):
        stanza = raw_message(user.with_device(device_id), ana.user, [ana.address, world["ana_laptop"].address])
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await relay.Send(pb.SendRequest(stanza=encode(stanza)), metadata=birdy.credentials(str(user), device_id))
        reasons.append((error.value.code(), error_reason(error.value)[0]))
    assert reasons == [
        (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
        (grpc.StatusCode.NOT_FOUND, "DEVICE_NOT_FOUND"),
    ]
    assert await _mailbox_lengths(redis_url, world) == 0
    await world.close()


async def test_relay_connect_refuses_unregistered_devices(cluster: Cluster) -> None:
    world = await start_world(cluster)
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    birdy = world.backends["birdy"]
    for user, device_id in _ghost_devices(world):
        call = relay.Connect(iter(()), metadata=birdy.credentials(str(user), device_id))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    await world.close()


async def test_keydir_refuses_unregistered_requesters(cluster: Cluster) -> None:
    world = await start_world(cluster)
    keydir = keydir_pb2_grpc.KeyDirectoryServiceStub(cluster.channel("keydir"))
    birdy = world.backends["birdy"]
    ana = world["ana_phone"]

    async def remaining() -> int:
        answer = await keydir.GetPreKeyCount(
            kd_pb.GetPreKeyCountRequest(), metadata=ana.backend.credentials(str(ana.user), ana.device_id)
        )
        return answer.one_time_prekey_count

    before = await remaining()
    for user, device_id in _ghost_devices(world):
        with pytest.raises(grpc.aio.AioRpcError) as fetch:
            await keydir.FetchPreKeyBundles(
                kd_pb.FetchPreKeyBundlesRequest(address=str(ana.user)), metadata=birdy.credentials(str(user), device_id)
            )
        assert fetch.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as count:
            await keydir.GetPreKeyCount(kd_pb.GetPreKeyCountRequest(), metadata=birdy.credentials(str(user), device_id))
        assert count.value.code() == grpc.StatusCode.NOT_FOUND
    # Nothing was handed out.
    assert before == await remaining() > 0
    await world.close()


async def test_a_device_registered_a_moment_ago_acts_at_once(cluster: Cluster) -> None:
    """The registration cache may hold the user's device list from before; a miss is asked again, not refused."""
    world = await start_world(cluster)
    birdy = world.backends["birdy"]
    ben = world["ben"]
    keydir = keydir_pb2_grpc.KeyDirectoryServiceStub(cluster.channel("keydir"))
    # Ben's device list is now cached at the key directory.
    await keydir.GetPreKeyCount(
        kd_pb.GetPreKeyCountRequest(), metadata=ben.backend.credentials(str(ben.user), ben.device_id)
    )
    registered = await birdy.identity.RegisterDevice(
        id_pb.RegisterDeviceRequest(registration_id=7), metadata=birdy.credentials(str(ben.user))
    )
    answer = await keydir.GetPreKeyCount(
        kd_pb.GetPreKeyCountRequest(), metadata=birdy.credentials(str(ben.user), registered.device.device_id)
    )
    assert answer.one_time_prekey_count == 0
    await world.close()
