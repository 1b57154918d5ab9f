"""The relay while its Redis is paused: calls fail fast with a retry hint, client deadlines hold, nothing is lost.

A paused Redis (SIGSTOP: connections open, nothing answered, as in a partition) used to keep a `Send` without a
client deadline waiting for about 20 s of retried timeouts (issue 10, item 7).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support.cluster import Cluster
from support.relay import start_world, text

from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime.testing import RedisServer
from parley_sdk import error_reason
from parley_stanza import encode

# Far above the 1 s Redis deadline plus retries of lost connections, far below the ~20 s a paused Redis cost.
BOUND_S = 8


async def test_a_paused_redis_fails_sends_fast_and_nothing_is_lost(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, redis_server = own_redis_cluster
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    stanza = encode(await ben.encrypt(ana.user, text("while paused"), message_id="paused-1"))
    credentials = ben.backend.credentials(str(ben.user), ben.device_id)

    redis_server.pause()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unbounded:
            async with asyncio.timeout(BOUND_S):
                await relay.Send(pb.SendRequest(stanza=stanza), metadata=credentials)
        assert unbounded.value.code() == grpc.StatusCode.UNAVAILABLE
        reason, metadata = error_reason(unbounded.value)
        assert reason == "DEPENDENCY_UNAVAILABLE"
        assert int(metadata["retry_after_ms"]) > 0
        # A client's own deadline is kept, shorter than the Redis deadline.
        with pytest.raises(grpc.aio.AioRpcError) as bounded:
            await relay.Send(
                pb.SendRequest(stanza=stanza),
                metadata=ben.backend.credentials(str(ben.user), ben.device_id),
                timeout=0.3,
            )
        assert bounded.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        redis_server.resume()

    # The refused send changed nothing: sent again, it is stored once and arrives once.
    await ben.send(await ben.encrypt(ana.user, text("after the pause"), message_id="paused-1"))
    received = []
    async with ana.connect() as stream:
        async with asyncio.timeout(10):
            incoming = await stream.receive()
            received.append(incoming.stanza.id)
            await stream.ack(incoming.delivery_id)
        await stream.drained.wait()
    assert received == ["paused-1"]
    await world.close()
