"""Identity while its Redis is down: calls fail closed with UNAVAILABLE and recover when Redis is back.

Uses a Redis of its own (append-only, so a restart keeps the data) instead of the module's shared one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from support.cluster import Cluster, error_reason

from parley.identity.v1 import identity_pb2 as pb
from parley_runtime.testing import RedisServer

USER = "username:ann@birdy"


async def test_redis_outage_fails_closed_and_recovers(own_redis_cluster: tuple[Cluster, RedisServer]) -> None:
    cluster, redis_server = own_redis_cluster
    await cluster.start_identity()
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(birdy, USER)
    identity = cluster.identity()

    redis_server.stop()
    # Authentication needs Redis too (one-time assertion ids): nothing is let through unchecked.
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: identity.ListDevices(pb.ListDevicesRequest(), metadata=birdy.auth(USER)),
        lambda: identity.RegisterDevice(pb.RegisterDeviceRequest(registration_id=9), metadata=birdy.auth(USER)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call()
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(error.value) == "DEPENDENCY_UNAVAILABLE"

    redis_server.start()
    devices = await identity.ListDevices(pb.ListDevicesRequest(), metadata=birdy.auth(USER))
    assert [(d.device_id, d.registration_id) for d in devices.devices] == [(1, 100)]
