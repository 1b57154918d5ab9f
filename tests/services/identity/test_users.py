"""Users and devices at the identity service: registration, identifier normalization, the per-user device bound.

Identity runs with ``max_devices_per_user=2`` so the bound is reached quickly.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.cluster import Cluster, ProviderKeys, error_reason

from parley.common.v1.common_pb2 import IdentifierKind
from parley.identity.v1 import identity_pb2 as pb

PHONE = "phone:+4915112345678@gatekeeper"


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


@pytest.fixture
async def gatekeeper(cluster: Cluster) -> ProviderKeys:
    await cluster.start_identity(max_devices_per_user=2)
    return await cluster.enlist("gatekeeper")


async def _devices(cluster: Cluster, keys: ProviderKeys, user: str) -> list[tuple[int, int]]:
    response = await cluster.identity().ListDevices(pb.ListDevicesRequest(), metadata=keys.auth(user))
    return [(device.device_id, device.registration_id) for device in response.devices]


async def _register_device(cluster: Cluster, keys: ProviderKeys, user: str, registration_id: int) -> pb.Device:
    response = await cluster.identity().RegisterDevice(
        pb.RegisterDeviceRequest(registration_id=registration_id), metadata=keys.auth(user)
    )
    return response.device


async def test_register_user_starts_with_consent_off(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    response = await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=gatekeeper.auth(PHONE))
    assert response.address == PHONE
    assert response.consent.state == pb.ConsentState.CONSENT_STATE_OFF
    assert response.consent.inbox_mode == pb.InboxMode.INBOX_MODE_SEPARATE
    assert list(response.consent.allowed_providers) == []
    stored = await cluster.identity().GetConsent(pb.GetConsentRequest(), metadata=gatekeeper.auth(PHONE))
    assert stored.consent == response.consent


async def test_registering_twice_is_refused_and_keeps_the_user(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=1)
    before = await cluster.identity().GetConsent(pb.GetConsentRequest(), metadata=gatekeeper.auth(PHONE))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=gatekeeper.auth(PHONE))
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error.value) == "ALREADY_EXISTS"
    after = await cluster.identity().GetConsent(pb.GetConsentRequest(), metadata=gatekeeper.auth(PHONE))
    assert after.consent == before.consent
    assert await _devices(cluster, gatekeeper, PHONE) == [(1, 100)]


async def test_identifier_kind_the_provider_does_not_use_is_refused(cluster: Cluster) -> None:
    await cluster.start_identity()
    birdy = await cluster.enlist("birdy", kinds=[IdentifierKind.IDENTIFIER_KIND_USERNAME])
    phone_user = "phone:+4915112345678@birdy"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=birdy.auth(phone_user))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "INVALID_IDENTIFIER"
    with pytest.raises(grpc.aio.AioRpcError) as absent:
        await cluster.identity().GetConsent(pb.GetConsentRequest(), metadata=birdy.auth(phone_user))
    assert error_reason(absent.value) == "USER_NOT_FOUND"
    # The kind it does use works.
    await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=birdy.auth("username:ann@birdy"))


@pytest.mark.parametrize(
    "spelling",
    [
        "phone:+49 151 12345678@gatekeeper",
        "phone:+49 (151) 1234-5678@gatekeeper",
        "phone:+49-151-123-456-78@gatekeeper",
    ],
)
async def test_phone_spellings_name_one_e164_user(cluster: Cluster, gatekeeper: ProviderKeys, spelling: str) -> None:
    identity = cluster.identity()
    registered = await identity.RegisterUser(pb.RegisterUserRequest(), metadata=gatekeeper.auth(spelling))
    assert registered.address == PHONE
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.RegisterUser(pb.RegisterUserRequest(), metadata=gatekeeper.auth(PHONE))
    assert error_reason(error.value) == "ALREADY_EXISTS"
    device = await identity.RegisterDevice(pb.RegisterDeviceRequest(registration_id=5), metadata=gatekeeper.auth(PHONE))
    assert device.address == f"{PHONE}/1"
    assert await _devices(cluster, gatekeeper, spelling) == [(1, 5)]


async def test_usernames_and_emails_are_lower_cased(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    identity = cluster.identity()
    username = await identity.RegisterUser(
        pb.RegisterUserRequest(), metadata=gatekeeper.auth("username:Ann@gatekeeper")
    )
    assert username.address == "username:ann@gatekeeper"
    email = await identity.RegisterUser(
        pb.RegisterUserRequest(), metadata=gatekeeper.auth("email:Ann@Example.ORG@gatekeeper")
    )
    assert email.address == "email:ann@example.org@gatekeeper"


async def test_devices_are_bounded_per_user(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=0)
    first = await _register_device(cluster, gatekeeper, PHONE, 11)
    second = await _register_device(cluster, gatekeeper, PHONE, 12)
    assert (first.device_id, second.device_id) == (1, 2)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _register_device(cluster, gatekeeper, PHONE, 13)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = _error_info(error.value)
    assert (info.reason, dict(info.metadata)) == ("TOO_MANY_DEVICES", {"limit": "2"})
    assert await _devices(cluster, gatekeeper, PHONE) == [(1, 11), (2, 12)]


@pytest.mark.parametrize("registration_id", [0, 16381, 2**32 - 1])
async def test_bad_registration_ids_are_refused(
    cluster: Cluster, gatekeeper: ProviderKeys, registration_id: int
) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=1)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _register_device(cluster, gatekeeper, PHONE, registration_id)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = _error_info(error.value)
    assert (info.reason, dict(info.metadata)) == ("INVALID_FIELD", {"field": "registration_id"})
    assert await _devices(cluster, gatekeeper, PHONE) == [(1, 100)]


async def test_registration_id_bounds_are_inclusive(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=0)
    await _register_device(cluster, gatekeeper, PHONE, 1)
    await _register_device(cluster, gatekeeper, PHONE, 16380)
    assert await _devices(cluster, gatekeeper, PHONE) == [(1, 1), (2, 16380)]


async def test_a_device_needs_a_registered_user(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _register_device(cluster, gatekeeper, PHONE, 7)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error.value) == "USER_NOT_FOUND"
    assert await _devices(cluster, gatekeeper, PHONE) == []


async def test_removing_an_unknown_device_is_refused(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=1)
    for device_id in (0, 2, 99):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await cluster.identity().RemoveDevice(
                pb.RemoveDeviceRequest(device_id=device_id), metadata=gatekeeper.auth(PHONE)
            )
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(error.value) == "DEVICE_NOT_FOUND"
    assert await _devices(cluster, gatekeeper, PHONE) == [(1, 100)]


async def test_device_ids_are_never_reused(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=2)
    identity = cluster.identity()
    await identity.RemoveDevice(pb.RemoveDeviceRequest(device_id=2), metadata=gatekeeper.auth(PHONE))
    assert (await _register_device(cluster, gatekeeper, PHONE, 21)).device_id == 3
    await identity.RemoveDevice(pb.RemoveDeviceRequest(device_id=1), metadata=gatekeeper.auth(PHONE))
    assert (await _register_device(cluster, gatekeeper, PHONE, 22)).device_id == 4
    assert await _devices(cluster, gatekeeper, PHONE) == [(3, 21), (4, 22)]


async def test_concurrent_registrations_respect_the_bound(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await cluster.register_user(gatekeeper, PHONE, devices=0)
    identity = cluster.identity()
    results = await asyncio.gather(
        *(
            identity.RegisterDevice(pb.RegisterDeviceRequest(registration_id=50 + i), metadata=gatekeeper.auth(PHONE))
            for i in range(10)
        ),
        return_exceptions=True,
    )
    registered = sorted(r.device.device_id for r in results if isinstance(r, pb.RegisterDeviceResponse))
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert registered == [1, 2]
    assert len(refused) == 8
    assert {error_reason(error) for error in refused} == {"TOO_MANY_DEVICES"}
    assert [device_id for device_id, _ in await _devices(cluster, gatekeeper, PHONE)] == [1, 2]
