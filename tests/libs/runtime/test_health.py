"""Readiness follows the dependencies a service cannot work without; liveness does not (issue 10, item 6)."""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.cluster import Cluster

from parley.keydir.v1 import keydir_pb2
from parley_runtime.health import LIVENESS, READINESS, peer_check
from parley_runtime.testing import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
KEYDIR = keydir_pb2.DESCRIPTOR.services_by_name["KeyDirectoryService"].full_name
FAST = {"readiness_interval_s": 0.1}


async def _statuses(cluster: Cluster, name: str) -> dict[str, int]:
    health = health_pb2_grpc.HealthStub(cluster.channel(name))
    names = {"liveness": LIVENESS, "readiness": READINESS, "overall": "", "service": KEYDIR}
    if name == "identity":
        del names["service"]
    answers = {}
    for key, service in names.items():
        answers[key] = (await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status
    return answers


async def _until(cluster: Cluster, name: str, readiness: int) -> dict[str, int]:
    """Every status once readiness has become ``readiness`` (followed with the health service's Watch)."""
    watch = health_pb2_grpc.HealthStub(cluster.channel(name)).Watch(health_pb2.HealthCheckRequest(service=READINESS))
    async with asyncio.timeout(10):
        async for update in watch:
            if update.status == readiness:
                break
    watch.cancel()
    return await _statuses(cluster, name)


async def test_readiness_follows_redis_and_liveness_does_not(own_redis_cluster: tuple[Cluster, RedisServer]) -> None:
    cluster, redis_server = own_redis_cluster
    await cluster.start_identity(**FAST)
    await cluster.start_keydir(**FAST)
    for name in ("identity", "keydir"):
        assert set((await _statuses(cluster, name)).values()) == {SERVING}
    redis_server.stop()
    for name in ("identity", "keydir"):
        answers = await _until(cluster, name, NOT_SERVING)
        # Kubernetes must not restart a healthy process for a Redis blip; load balancers must stop routing to it.
        assert answers["liveness"] == SERVING
        assert {answers[key] for key in answers if key != "liveness"} == {NOT_SERVING}
    redis_server.start()
    for name in ("identity", "keydir"):
        assert set((await _until(cluster, name, SERVING)).values()) == {SERVING}


async def test_a_service_that_follows_identity_is_not_ready_without_it(cluster: Cluster) -> None:
    await cluster.start_identity(**FAST)
    await cluster.start_keydir(**FAST)
    identity = cluster.servers["identity"]
    await identity.stop(grace=0)
    answers = await _until(cluster, "keydir", NOT_SERVING)
    assert answers["liveness"] == SERVING


async def test_an_unreachable_peer_reads_as_not_ready_within_its_timeout() -> None:
    """A check against a peer that accepts nothing fails by its deadline, so the watcher never hangs."""
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # discard port: nothing listens
    check = peer_check(channel, "nobody", timeout_s=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async with asyncio.timeout(5):
            await check()
    assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    await channel.close()
