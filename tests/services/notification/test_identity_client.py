"""The device check against a real identity server: each of identity's answers becomes the right status."""

from __future__ import annotations

from support.cluster import ADMIN, INTERNAL_TOKEN, Cluster

from parley.identity.v1 import identity_pb2 as id_pb
from parley_notification.handler import DeviceStatus
from parley_notification.identity_client import IdentityDeviceRegistry
from parley_runtime.clients import internal_channel
from parley_stanza import Address

ALICE = "username:alice@birdy"


async def test_device_status_tells_a_missing_user_from_a_missing_device(cluster: Cluster) -> None:
    target = await cluster.start_identity()
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(birdy, ALICE, devices=2)
    await cluster.identity().RemoveDevice(id_pb.RemoveDeviceRequest(device_id=1), metadata=birdy.auth(ALICE))
    channel = internal_channel(target, internal_token=INTERNAL_TOKEN, telemetry=cluster.telemetry)
    try:
        registry = IdentityDeviceRegistry(channel)
        assert await registry.device_status(Address.parse(f"{ALICE}/2")) is DeviceStatus.REGISTERED
        assert await registry.device_status(Address.parse(f"{ALICE}/1")) is DeviceStatus.DEVICE_NOT_FOUND
        assert await registry.device_status(Address.parse(f"{ALICE}/3")) is DeviceStatus.DEVICE_NOT_FOUND
        carol = Address.parse("username:carol@birdy/1")
        assert await registry.device_status(carol) is DeviceStatus.USER_NOT_FOUND

        await cluster.identity().SuspendProvider(id_pb.SuspendProviderRequest(provider_id="birdy"), metadata=ADMIN)
        # Identity no longer vouches for any of the provider's devices, the registered one included.
        assert await registry.device_status(Address.parse(f"{ALICE}/2")) is DeviceStatus.PROVIDER_UNAVAILABLE
    finally:
        await channel.close()
