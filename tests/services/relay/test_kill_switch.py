"""The kill switch at the relay: a provider's open streams end within one second of its suspension or revocation,
each saying which, and new streams and sends are refused the same way. Real identity, key directory and relay."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support.cluster import ADMIN, Cluster
from support.relay import start_world, text

from parley.identity.v1 import identity_pb2 as id_pb
from parley_sdk import error_reason

KILL_SWITCH_S = 1.0
"""The promise: streams end within one second of the admin call's answer."""


@pytest.mark.parametrize(
    ("rpc", "request_type", "reason"),
    [
        ("SuspendProvider", id_pb.SuspendProviderRequest, "PROVIDER_SUSPENDED"),
        ("RevokeProvider", id_pb.RevokeProviderRequest, "PROVIDER_REVOKED"),
    ],
    ids=["suspend", "revoke"],
)
async def test_open_streams_end_within_a_second_saying_why(
    cluster: Cluster, rpc: str, request_type: type[id_pb.SuspendProviderRequest], reason: str
) -> None:
    world = await start_world(cluster)
    ben, cleo, ana = world["ben"], world["cleo_phone"], world["ana_phone"]
    identity = cluster.identity()
    async with ben.connect() as ben_stream, cleo.connect() as cleo_stream, ana.connect() as ana_stream:
        async with asyncio.timeout(10):
            for stream in (ben_stream, cleo_stream, ana_stream):
                await stream.drained.wait()
        await getattr(identity, rpc)(request_type(provider_id="birdy", reason="test"), metadata=ADMIN)
        errors = []
        for stream in (ben_stream, cleo_stream):
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                # Measured from the admin call's answer: every stream of the provider is gone within the second.
                async with asyncio.timeout(KILL_SWITCH_S):
                    await stream.receive()
            errors.append(ended.value)
        # Other providers' streams stay open: an (empty) send frame is still answered.
        async with asyncio.timeout(10):
            assert list((await ana_stream.send([])).results) == []
    for error in errors:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error) == (reason, {"provider_id": "birdy"})
    # New streams and sends of the provider are refused with the same reason.
    async with ben.connect() as again:
        with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
            async with asyncio.timeout(10):
                await again.receive()
    assert error_reason(refused_stream.value)[0] == reason
    with pytest.raises(grpc.aio.AioRpcError) as refused_send:
        await ben.send_content(ana.user, text("anyone?"))
    assert error_reason(refused_send.value)[0] == reason
    await world.close()
