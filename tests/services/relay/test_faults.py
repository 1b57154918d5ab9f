"""Faults: a relay replica killed mid-stream, Redis restarted with persistence, a replica shut down gracefully.

In every case each message reaches the recipient: at least once from the relay, exactly once after the client's
de-duplication by message id (as the design promises), and the counts are checked at the receiving end.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from support.cluster import ADMIN_TOKEN, CREDENTIALS, SESSION_KEY, Cluster
from support.relay import World, raw_message, start_world

from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime.testing import RedisServer, ServiceProcess
from parley_sdk import DeviceClient, RelayConnection, StreamClosedError
from parley_stanza import Message, encode


def _stanza(world: World, sender: str, recipient: str, message_id: str) -> bytes:
    device = world[sender]
    target = world[recipient].user
    devices = [d.address for d in world.devices.values() if d.user == target]
    return encode(raw_message(device.address, target, devices, message_id))


async def _send(stub: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, data: bytes) -> None:
    await stub.Send(
        pb.SendRequest(stanza=data), metadata=device.backend.credentials(str(device.user), device.device_id), timeout=5
    )


async def _collect(
    device: DeviceClient, stub: relay_pb2_grpc.RelayServiceStub, seen: set[str], want: int, *, ack: bool = True
) -> None:
    """Streams from ``stub`` until ``want`` distinct message ids were seen (duplicates are dropped, as clients do)."""
    connection = RelayConnection(stub, device.backend.credentials(str(device.user), device.device_id))
    async with connection:
        while len(seen) < want:
            async with asyncio.timeout(15):
                incoming = await connection.receive()
            if isinstance(incoming.stanza, Message):
                seen.add(incoming.stanza.id)
            if ack:
                await connection.ack(incoming.delivery_id)


@pytest.mark.timeout(180)
async def test_killing_a_relay_replica_mid_stream_loses_nothing(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    env = {
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PARLEY_SESSION_KEY": SESSION_KEY,
        "PARLEY_IDENTITY_TARGET": cluster.target("identity"),
        "PARLEY_STREAM_POLL_S": "0.5",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    replicas = [
        ServiceProcess("parley_relay", {**env, "PARLEY_REPLICA": f"r{i}"}, credentials=CREDENTIALS) for i in range(2)
    ]
    for replica in replicas:
        await asyncio.to_thread(replica.start)
    stubs = [relay_pb2_grpc.RelayServiceStub(grpc.aio.insecure_channel(r.target)) for r in replicas]
    ana, ben = world["ana_phone"], world["ben"]
    total = 120
    seen: set[str] = set()
    # Ana streams from replica 0, the one that will die.
    receiver = asyncio.create_task(_collect(ana, stubs[0], seen, total))
    accepted = 0
    for i in range(total):
        data = _stanza(world, "ben", "ana_phone", f"k{i}")
        if i == total // 3:
            replicas[0].stop(kill=True)
        # Alternate replicas; a send to the dead one is retried on the survivor with the very same stanza.
        order = [stubs[i % 2], stubs[1]] if replicas[0].process is not None else [stubs[1]]
        for stub in order:
            try:
                await _send(stub, ben, data)
                accepted += 1
                break
            except grpc.aio.AioRpcError:
                continue
    assert accepted == total
    with contextlib.suppress(grpc.aio.AioRpcError, EOFError, TimeoutError, StreamClosedError):
        await receiver  # the stream on the dead replica breaks
    # Ana reconnects to the survivor and gets the rest.
    await _collect(ana, stubs[1], seen, total)
    assert seen == {f"k{i}" for i in range(total)}
    replicas[1].stop()
    await world.close()


@pytest.mark.timeout(180)
async def test_redis_restart_with_persistence_loses_nothing_acknowledged(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, redis_server = own_redis_cluster
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    stub = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    for i in range(20):
        await _send(stub, ben, _stanza(world, "ben", "ana_phone", f"p{i}"))
    await asyncio.to_thread(redis_server.restart)
    # Services reconnect on their own; sends after the restart work too.
    for _ in range(50):
        try:
            await _send(stub, ben, _stanza(world, "ben", "ana_phone", "after"))
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the relay did not recover from the Redis restart within 5 s")
    seen: set[str] = set()
    await _collect(ana, stub, seen, 21)
    assert seen == {f"p{i}" for i in range(20)} | {"after"}
    await world.close()


async def test_graceful_shutdown_keeps_unacknowledged_stanzas_for_another_replica(cluster: Cluster) -> None:
    world = await start_world(cluster, relays=2)
    ana, ben = world["ana_phone"], world["ben"]
    first = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    second = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay-1"))
    for i in range(10):
        await _send(second, ben, _stanza(world, "ben", "ana_phone", f"g{i}"))
    seen_before: set[str] = set()
    # Read everything on the first replica without acknowledging, then shut it down.
    await _collect(ana, first, seen_before, 10, ack=False)
    await cluster.servers["relay"].stop(1.0)
    seen_after: set[str] = set()
    await _collect(ana, second, seen_after, 10)
    assert seen_before == seen_after == {f"g{i}" for i in range(10)}
    await world.close()
