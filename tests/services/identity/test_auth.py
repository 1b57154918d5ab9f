"""Authentication at the identity service, over real gRPC and Redis.

Every kind of bad credential is refused with its exact status and reason, and a refused call changes nothing:
the refusals run against RegisterUser, and the user must not exist afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import jwt
import pytest
import redis.asyncio as aioredis
from support.cluster import ADMIN, INTERNAL, Cluster, ProviderKeys, error_reason

from parley.identity.v1 import identity_pb2 as pb
from parley_identity.servicer import ACCESS
from parley_runtime import redis_keys
from parley_runtime.auth import Access, mint_assertion

USER = "username:ann@birdy"
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Providers:
    """Providers in every status, enlisted on a fresh identity server."""

    birdy: ProviderKeys
    gatekeeper: ProviderKeys
    pending: ProviderKeys
    suspended: ProviderKeys
    revoked: ProviderKeys


@pytest.fixture
async def providers(cluster: Cluster) -> Providers:
    await cluster.start_identity()
    identity = cluster.identity()
    suspended = await cluster.enlist("suspended")
    await identity.SuspendProvider(pb.SuspendProviderRequest(provider_id="suspended"), metadata=ADMIN)
    revoked = await cluster.enlist("revoked")
    await identity.RevokeProvider(pb.RevokeProviderRequest(provider_id="revoked"), metadata=ADMIN)
    return Providers(
        birdy=await cluster.enlist("birdy"),
        gatekeeper=await cluster.enlist("gatekeeper"),
        pending=await cluster.enlist("pending", approve=False),
        suspended=suspended,
        revoked=revoked,
    )


async def _user_exists(redis_url: str, address: str) -> bool:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return bool(await client.exists(redis_keys.user(address), redis_keys.user_devices(address)))
    finally:
        await client.aclose()


def _bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def _signed_without_jti(keys: ProviderKeys) -> Metadata:
    now = int(time.time())
    claims = {"iss": keys.provider_id, "sub": USER, "aud": "parley", "iat": now, "exp": now + 60}
    return _bearer(jwt.encode(claims, keys.signing_key, algorithm="EdDSA"))


# (credentials built from the providers, expected status, expected reason, the user the call would create)
_REFUSALS: dict[str, tuple[Callable[[Providers], Metadata], grpc.StatusCode, str, str]] = {
    "missing": (lambda p: (), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING", USER),
    "not bearer": (
        lambda p: (("authorization", "Basic YTpi"),),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
        USER,
    ),
    "expired": (
        lambda p: p.birdy.auth(USER, now=time.time() - 600),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_EXPIRED",
        USER,
    ),
    "lifetime over the max": (
        lambda p: p.birdy.auth(USER, lifetime_s=301),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_EXPIRED",
        USER,
    ),
    "issued in the future": (
        lambda p: p.birdy.auth(USER, now=time.time() + 600),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
        USER,
    ),
    "wrongly signed": (
        lambda p: ProviderKeys("birdy").auth(USER),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
        USER,
    ),
    "wrong audience": (
        lambda p: p.birdy.auth(USER, audience="another-gatekeeper"),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
        USER,
    ),
    "malformed": (lambda p: _bearer("not.a.jwt"), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID", USER),
    "unknown bearer token": (lambda p: _bearer("guess"), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID", USER),
    "no jti": (lambda p: _signed_without_jti(p.birdy), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID", USER),
    "bad dev claim": (
        lambda p: p.birdy.auth(USER, device_id=0),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
        USER,
    ),
    "dev disagrees with the device in sub": (
        lambda p: p.birdy.auth(f"{USER}/2", device_id=3),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
        USER,
    ),
    "unknown issuer": (
        lambda p: ProviderKeys("nobody").auth("username:ann@nobody"),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNKNOWN_PROVIDER",
        "username:ann@nobody",
    ),
    "user of another provider": (
        lambda p: p.birdy.auth("username:ann@gatekeeper"),
        grpc.StatusCode.PERMISSION_DENIED,
        "WRONG_PROVIDER",
        "username:ann@gatekeeper",
    ),
    "pending provider": (
        lambda p: p.pending.auth("username:ann@pending"),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROVIDER_NOT_APPROVED",
        "username:ann@pending",
    ),
    "suspended provider": (
        lambda p: p.suspended.auth("username:ann@suspended"),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROVIDER_SUSPENDED",
        "username:ann@suspended",
    ),
    "revoked provider": (
        lambda p: p.revoked.auth("username:ann@revoked"),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROVIDER_REVOKED",
        "username:ann@revoked",
    ),
    "provider-level assertion": (
        lambda p: p.birdy.auth("birdy"),
        grpc.StatusCode.PERMISSION_DENIED,
        "TOKEN_INVALID",
        USER,
    ),
    "admin token": (lambda p: ADMIN, grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID", USER),
    "internal token": (lambda p: INTERNAL, grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID", USER),
}


@pytest.mark.parametrize("case", list(_REFUSALS))
async def test_bad_credentials_are_refused_and_change_nothing(
    cluster: Cluster, providers: Providers, redis_url: str, case: str
) -> None:
    credentials, code, reason, user = _REFUSALS[case]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=credentials(providers))
    assert (error.value.code(), error_reason(error.value)) == (code, reason)
    assert not await _user_exists(redis_url, user)


async def test_the_same_credentials_done_right_are_accepted(
    cluster: Cluster, providers: Providers, redis_url: str
) -> None:
    # The control for the refusals above: the fixture's providers and the subject are fine as such.
    response = await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=providers.birdy.auth(USER))
    assert response.address == USER
    assert await _user_exists(redis_url, USER)


async def test_a_replayed_assertion_is_refused_on_every_replica(cluster: Cluster, providers: Providers) -> None:
    await cluster.start_identity()
    replica_a, replica_b = cluster.identity("identity"), cluster.identity("identity-1")
    await cluster.register_user(providers.birdy, USER, devices=0)
    token = mint_assertion(providers.birdy.signing_key, provider_id="birdy", subject=USER)
    await replica_a.RegisterDevice(pb.RegisterDeviceRequest(registration_id=7), metadata=_bearer(token))
    for replica in (replica_a, replica_b):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await replica.RegisterDevice(pb.RegisterDeviceRequest(registration_id=8), metadata=_bearer(token))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(error.value) == "TOKEN_REPLAYED"
    devices = await replica_a.ListDevices(pb.ListDevicesRequest(), metadata=providers.birdy.auth(USER))
    assert [(d.device_id, d.registration_id) for d in devices.devices] == [(1, 7)]


async def test_resolve_recipient_is_internal_only(cluster: Cluster, providers: Providers) -> None:
    await cluster.register_user(providers.birdy, USER, allow=["gatekeeper"])
    await cluster.register_user(providers.gatekeeper, "username:bob@gatekeeper", allow=["birdy"])
    identity = cluster.identity()
    request = pb.ResolveRecipientRequest(sender="username:bob@gatekeeper", recipient=USER)
    refusals = {
        "user assertion": (providers.gatekeeper.auth("username:bob@gatekeeper"), "INTERNAL_ONLY"),
        "admin token": (ADMIN, "TOKEN_INVALID"),
    }
    for credentials, reason in refusals.values():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await identity.ResolveRecipient(request, metadata=credentials)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error.value) == reason
    allowed = await identity.ResolveRecipient(request, metadata=INTERNAL)
    assert allowed.reachability == pb.Reachability.REACHABILITY_REACHABLE


async def _call_raw(channel: grpc.aio.Channel, method: str, metadata: Metadata) -> None:
    # Empty request bodies are valid for every request message; no serializers means bytes in, bytes out.
    if method.endswith("/WatchProviders"):
        stream = channel.unary_stream(method)(b"", metadata=metadata)
        try:
            await stream.read()
        finally:
            stream.cancel()
    else:
        await channel.unary_unary(method)(b"", metadata=metadata)


async def test_every_rpc_refuses_the_credentials_its_policy_does_not_accept(
    cluster: Cluster, providers: Providers
) -> None:
    channel = cluster.channel("identity")
    mismatches = []
    for method, access in ACCESS.items():
        expected: list[tuple[str, Metadata, grpc.StatusCode, str]] = [
            ("none", (), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        ]
        if Access.ADMIN not in access:
            expected.append(("admin", ADMIN, grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID"))
        if Access.INTERNAL not in access:
            expected.append(("internal", INTERNAL, grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID"))
        if Access.USER not in access:
            # A provider-level RPC (CreateSession) needs another kind of assertion, not another credential.
            needed = "TOKEN_INVALID" if Access.PROVIDER in access else "INTERNAL_ONLY"
            needed = "ADMIN_REQUIRED" if Access.ADMIN in access else needed
            expected.append(("user", providers.birdy.auth(USER), grpc.StatusCode.PERMISSION_DENIED, needed))
        for name, metadata, code, reason in expected:
            try:
                await _call_raw(channel, method, metadata)
            except grpc.aio.AioRpcError as error:
                got = (error.code(), error_reason(error))
            else:
                got = (grpc.StatusCode.OK, "")
            if got != (code, reason):
                mismatches.append(f"{method} with {name}: {got}, expected {(code, reason)}")
    assert mismatches == []


async def test_an_assertion_sent_many_times_at_once_is_accepted_once(cluster: Cluster, providers: Providers) -> None:
    await cluster.register_user(providers.birdy, USER, devices=0)
    identity = cluster.identity()
    token = mint_assertion(providers.birdy.signing_key, provider_id="birdy", subject=USER)
    results = await asyncio.gather(
        *(
            identity.RegisterDevice(pb.RegisterDeviceRequest(registration_id=10 + i), metadata=_bearer(token))
            for i in range(5)
        ),
        return_exceptions=True,
    )
    accepted = [r for r in results if isinstance(r, pb.RegisterDeviceResponse)]
    replayed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(accepted) == 1
    assert {(error.code(), error_reason(error)) for error in replayed} == {
        (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REPLAYED")
    }
    assert len(replayed) == 4
    devices = await identity.ListDevices(pb.ListDevicesRequest(), metadata=providers.birdy.auth(USER))
    assert len(devices.devices) == 1
