"""The gatekeeper's interop policy end to end: EU users only, primary phones only. Identity applies it at opt-in
and on every resolve; a change closes the streams it no longer allows within a second and refuses their sends.
Real identity, key directory and relay on a real Redis; every message counted at the other end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest
from support.cluster import ADMIN, ALL_FEATURES, Cluster
from support.relay import start_providers, text

from parley.identity.v1 import identity_pb2 as id_pb
from parley_sdk import DeviceClient, ProviderBackend, RelayConnection, error_reason
from parley_stanza import Address, Message

POLICY_S = 1.0
"""The promise: a policy change reaches open streams within one second of the admin call's answer."""
WAIT_S = 10.0


@dataclass
class Cast:
    """Gatekeeper users with a German number (phone and laptop) and a US number; Ben at birdy."""

    cluster: Cluster
    backends: list[ProviderBackend]
    de_phone: DeviceClient
    de_laptop: DeviceClient
    us: DeviceClient
    ben: DeviceClient

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()


@pytest.fixture
async def cast(cluster: Cluster) -> Cast:
    backends = await start_providers(cluster, dict.fromkeys(("gatekeeper", "birdy"), ALL_FEATURES))
    gatekeeper, birdy = backends["gatekeeper"], backends["birdy"]
    de = Address.parse("phone:+4915112345678@gatekeeper")
    de_phone = await DeviceClient.register(gatekeeper, de, new_user=True)
    de_laptop = await DeviceClient.register(gatekeeper, de, new_user=False)
    us = await DeviceClient.register(gatekeeper, Address.parse("phone:+12025550123@gatekeeper"), new_user=True)
    ben = await DeviceClient.register(birdy, Address.parse("username:ben@birdy"), new_user=True)
    for device, allowed in ((de_phone, "birdy"), (us, "birdy"), (ben, "gatekeeper")):
        await device.enable_third_party_chats([allowed])
    for device in (de_phone, de_laptop, us, ben):
        await device.publish_keys(10)
    return Cast(cluster, list(backends.values()), de_phone, de_laptop, us, ben)


async def _set_policy(cluster: Cluster, regions: list[str], primary_only: bool = False) -> None:
    policy = id_pb.InteropPolicy(allowed_regions=regions, primary_device_only=primary_only)
    await cluster.identity().SetInteropPolicy(
        id_pb.SetInteropPolicyRequest(provider_id="gatekeeper", policy=policy), metadata=ADMIN
    )


async def _ends_within_a_second(stream: RelayConnection) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(POLICY_S):
            await stream.receive()
    return ended.value


async def _until_refused(sender: DeviceClient, recipient: Address) -> tuple[grpc.aio.AioRpcError, list[str]]:
    """Sends until refused; the refusal and the bodies accepted meanwhile (a send may race the policy event)."""
    accepted: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            body = f"racing {len(accepted)}"
            try:
                await sender.send_content(recipient, text(body))
            except grpc.aio.AioRpcError as error:
                return error, accepted
            accepted.append(body)


async def _bodies(stream: RelayConnection, device: DeviceClient, count: int) -> list[str]:
    bodies: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while len(bodies) < count:
            incoming = await stream.receive()
            await stream.ack(incoming.delivery_id)
            if isinstance(incoming.stanza, Message):
                bodies.append(device.decrypt(incoming.stanza).content.text.body)
    return bodies


async def test_eu_users_only(cluster: Cluster, cast: Cast) -> None:
    ben, us, de = cast.ben, cast.us, cast.de_phone
    await ben.send_content(us.user, text("hello US"))
    async with us.connect() as us_stream:
        assert await _bodies(us_stream, us, 1) == ["hello US"]
        await _set_policy(cluster, ["EU"])
        ended = await _ends_within_a_second(us_stream)
    assert ended.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(ended) == ("INTEROP_POLICY", {"rule": "region", "provider_id": "gatekeeper"})

    # Nobody else can reach the US user any more, exactly as if it had never opted in...
    refused, racing = await _until_refused(ben, us.user)
    assert error_reason(refused)[0] == "USER_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as lookup:
        await ben.lookup(str(us.user))
    assert error_reason(lookup.value)[0] == "USER_NOT_FOUND"
    # ...it cannot write to them, and it cannot opt in again: each time with the reason its app can show.
    with pytest.raises(grpc.aio.AioRpcError) as send:
        await us.send_content(ben.user, text("hello?"))
    assert error_reason(send.value) == ("INTEROP_POLICY", {"rule": "region", "provider_id": "gatekeeper"})
    with pytest.raises(grpc.aio.AioRpcError) as opt_in:
        await us.enable_third_party_chats(["birdy"])
    assert opt_in.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(opt_in.value) == ("INTEROP_POLICY", {"rule": "region", "provider_id": "gatekeeper"})

    # The German user goes on both ways.
    await ben.send_content(de.user, text("hallo"))
    await de.send_content(ben.user, text("servus"))
    async with ben.connect() as ben_stream:
        assert await _bodies(ben_stream, ben, 1) == ["servus"]

    # Lifting the policy lets the US user back in; what was accepted while racing the change arrives too.
    await _set_policy(cluster, [])
    await us.enable_third_party_chats(["birdy"])
    await ben.send_content(us.user, text("welcome back"))
    async with us.connect() as us_stream:
        assert await _bodies(us_stream, us, 1 + len(racing)) == [*racing, "welcome back"]
    async with de.connect() as de_stream:
        assert await _bodies(de_stream, de, 1) == ["hallo"]
    await cast.close()


async def test_primary_phones_only(cluster: Cluster, cast: Cast) -> None:
    ben, phone, laptop = cast.ben, cast.de_phone, cast.de_laptop
    await ben.send_content(phone.user, text("to both devices"))
    async with phone.connect() as phone_stream, laptop.connect() as laptop_stream:
        assert await _bodies(phone_stream, phone, 1) == ["to both devices"]
        assert await _bodies(laptop_stream, laptop, 1) == ["to both devices"]
        await _set_policy(cluster, [], primary_only=True)
        ended = await _ends_within_a_second(laptop_stream)
        assert error_reason(ended) == ("INTEROP_POLICY", {"rule": "primary_device", "provider_id": "gatekeeper"})
        # The phone's stream stays: an (empty) send frame is still answered, and Ben's messages reach it alone.
        async with asyncio.timeout(WAIT_S):
            assert list((await phone_stream.send([])).results) == []
        await ben.send_content(phone.user, text("to the phone"))
        assert await _bodies(phone_stream, phone, 1) == ["to the phone"]
    [only] = (await ben.lookup(str(phone.user))).devices
    assert only.device_id == 1

    with pytest.raises(grpc.aio.AioRpcError) as send:
        await laptop.send_content(ben.user, text("from the laptop"))
    assert error_reason(send.value) == ("INTEROP_POLICY", {"rule": "primary_device", "provider_id": "gatekeeper"})
    with pytest.raises(grpc.aio.AioRpcError) as opt_in:
        await laptop.enable_third_party_chats(["birdy"])
    assert error_reason(opt_in.value) == ("INTEROP_POLICY", {"rule": "primary_device", "provider_id": "gatekeeper"})
    await phone.send_content(ben.user, text("from the phone"))
    async with ben.connect() as ben_stream:
        assert await _bodies(ben_stream, ben, 1) == ["from the phone"]
    await cast.close()
