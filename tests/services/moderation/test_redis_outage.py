"""Moderation while its Redis is down: decisions fail closed with UNAVAILABLE, and recover after a restart.

Uses a Redis of its own (append-only, so a restart keeps blocks and buckets) instead of the module's shared one.
The restarted Redis has forgotten the Lua scripts, so recovery also exercises the pipeline's reloading.
"""

from __future__ import annotations

import grpc
import pytest
from support.cluster import Cluster, error_reason
from support.moderation import NO_REFILL, check, start_moderation

from parley.moderation.v1 import moderation_pb2 as pb
from parley_runtime.testing import RedisServer

BOB = "phone:+4915112345678@gatekeeper"
ALICE = "username:alice@birdy"


async def test_decisions_fail_closed_and_recover(own_redis_cluster: tuple[Cluster, RedisServer]) -> None:
    cluster, redis_server = own_redis_cluster
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    await cluster.enlist("birdy")
    moderation = await start_moderation(cluster, send_burst=2, send_per_second=NO_REFILL)
    await moderation.Block(pb.BlockRequest(address="username:carol@birdy"), metadata=gatekeeper.auth(BOB))
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == pb.VERDICT_ALLOW

    redis_server.stop()
    # Never ALLOW without the checks: the relay gets an error it refuses the send with.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(moderation, f"{ALICE}/1", BOB)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(error.value) == "DEPENDENCY_UNAVAILABLE"

    redis_server.start()
    # The block and the bucket survived; each script ran once for the send after the restart.
    assert (await check(moderation, "username:carol@birdy/1", BOB)).verdict == pb.VERDICT_DROP_SILENTLY
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == pb.VERDICT_ALLOW
    assert (await check(moderation, f"{ALICE}/1", BOB)).limit == "sender"
