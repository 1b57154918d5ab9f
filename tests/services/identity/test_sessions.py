"""Provider sessions end to end: identity makes them, identity, key directory and relay accept them, and every bad
session is refused with its reason, over real gRPC and Redis."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from support.cluster import ADMIN, SESSION_KEY, Cluster, ProviderKeys, error_reason
from support.relay import World, start_world, text

from parley.identity.v1 import identity_pb2 as id_pb
from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley_identity.app import IdentitySettings, build_identity
from parley_runtime.sessions import SessionKeys, provider_key_fingerprint
from parley_sdk import ProviderBackend

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def world(cluster: Cluster) -> AsyncIterator[World]:
    world = await start_world(cluster)
    yield world
    await world.close()


async def _session(identity_keys: ProviderKeys, cluster: Cluster) -> str:
    response = await cluster.identity().CreateSession(
        id_pb.CreateSessionRequest(), metadata=identity_keys.auth(identity_keys.provider_id)
    )
    return response.session_token


def _with(token: str, user: str = "", device: int | None = None) -> Metadata:
    metadata = [("authorization", f"Bearer {token}")]
    if user:
        metadata.append(("x-parley-user", user))
    if device is not None:
        metadata.append(("x-parley-device", str(device)))
    return tuple(metadata)


async def _refusal(call: object, metadata: Metadata) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(metadata)  # type: ignore[operator]
    return caught.value.code(), error_reason(caught.value)


async def test_sdk_traffic_runs_on_sessions_through_identity_keydir_and_relay(world: World) -> None:
    birdy = world.backends["birdy"]
    assert await birdy.start_session()
    assert await world.backends["gatekeeper"].start_session()
    ben = world["ben"]
    metadata = dict(birdy.credentials(str(ben.address.user), ben.device_id))
    assert metadata["authorization"].startswith("Bearer ps1.")
    assert metadata["x-parley-user"] == str(ben.address.user)
    devices = await birdy.identity.ListDevices(id_pb.ListDevicesRequest(), metadata=tuple(metadata.items()))
    assert [device.device_id for device in devices.devices] == [1]
    count = await birdy.keydir.GetPreKeyCount(kd_pb.GetPreKeyCountRequest(), metadata=tuple(metadata.items()))
    assert count.one_time_prekey_count == 20
    # Relay Send (the SDK's metadata is its session now).
    response = await ben.send_content(world["ana_phone"].user, text("over a session"))
    assert response.server_timestamp_ms > 0
    assert not response.duplicate


async def test_bad_sessions_are_refused_with_their_reasons(world: World) -> None:
    cluster = world.cluster
    birdy_keys = await cluster.enlist("other")  # a third provider, to suspend
    identity = cluster.identity()
    token = await _session(birdy_keys, cluster)

    async def list_providers(metadata: Metadata) -> object:
        return await identity.ListAvailableProviders(id_pb.ListAvailableProvidersRequest(), metadata=metadata)

    user = "username:ben@birdy"
    birdy_token = world.backends["birdy"]
    assert await birdy_token.start_session()
    good = dict(birdy_token.credentials(user))["authorization"].removeprefix("Bearer ")
    assert await list_providers(_with(good, user))

    prefix, kid, claims, tag = good.split(".")
    flipped = tag[:-2] + ("A" if tag[-2] != "A" else "B") + tag[-1]
    keys = SessionKeys(base64.b64decode(SESSION_KEY))
    birdy_fingerprint = provider_key_fingerprint(world.backends["birdy"].public_key)
    expired = keys.mint("birdy", int(time.time()) - 1, birdy_fingerprint)
    foreign = SessionKeys(b"another deployment's session key!").mint("birdy", int(time.time()) + 60, birdy_fingerprint)
    unauthenticated, denied = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    assert await _refusal(list_providers, _with(f"{prefix}.{kid}.{claims}.{flipped}", user)) == (
        unauthenticated,
        "TOKEN_INVALID",
    )
    assert await _refusal(list_providers, _with(expired, user)) == (unauthenticated, "TOKEN_EXPIRED")
    assert await _refusal(list_providers, _with(foreign, user)) == (unauthenticated, "SESSION_KEY_UNKNOWN")
    assert await _refusal(list_providers, _with(good, "username:ana@gatekeeper")) == (denied, "WRONG_PROVIDER")
    assert await _refusal(list_providers, _with(good, user, 0)) == (unauthenticated, "TOKEN_INVALID")
    # A provider-level session is not a user: user RPCs need x-parley-user.
    assert await _refusal(list_providers, _with(good)) == (denied, "TOKEN_INVALID")
    # A session cannot make another session: only an assertion proves the provider still holds its key.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreateSession(id_pb.CreateSessionRequest(), metadata=_with(good))
    assert (caught.value.code(), error_reason(caught.value)) == (denied, "TOKEN_INVALID")

    # The kill switch ends a provider's sessions at once, and approval brings them back.
    other = "username:olga@other"
    await cluster.register_user(birdy_keys, other)
    assert await list_providers(_with(token, other))
    await identity.SuspendProvider(id_pb.SuspendProviderRequest(provider_id="other"), metadata=ADMIN)
    assert await _refusal(list_providers, _with(token, other)) == (denied, "PROVIDER_SUSPENDED")
    await identity.ApproveProvider(id_pb.ApproveProviderRequest(provider_id="other"), metadata=ADMIN)
    assert await list_providers(_with(token, other))
    # New credentials end the sessions made with the old ones.
    replacement = ProviderKeys("other")
    await identity.UpdateProviderCredentials(
        id_pb.UpdateProviderCredentialsRequest(provider_id="other", signing_public_key=replacement.public_key),
        metadata=ADMIN,
    )
    assert await _refusal(list_providers, _with(token, other)) == (unauthenticated, "TOKEN_INVALID")


async def test_sessions_on_keydir_and_for_unregistered_users(world: World) -> None:
    keydir = world.backends["birdy"].keydir
    assert await world.backends["birdy"].start_session()
    token = dict(world.backends["birdy"].credentials("birdy"))["authorization"].removeprefix("Bearer ")

    async def count(metadata: Metadata) -> object:
        return await keydir.GetPreKeyCount(kd_pb.GetPreKeyCountRequest(), metadata=metadata)

    assert await count(_with(token, "username:cleo@birdy", 2))
    assert await _refusal(count, _with(token, "username:nobody@birdy", 1)) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert await _refusal(count, _with(token, "username:cleo@birdy", 9)) == (
        grpc.StatusCode.NOT_FOUND,
        "DEVICE_NOT_FOUND",
    )
    # A device RPC needs the device.
    assert await _refusal(count, _with(token, "username:cleo@birdy")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "TOKEN_INVALID",
    )


async def test_rotation_keeps_sessions_of_the_previous_key_until_it_is_dropped(cluster: Cluster) -> None:
    old_key = SESSION_KEY
    new_key = base64.b64encode(b"the next session key of the tests").decode()
    await cluster.start_identity()
    birdy = await cluster.enlist("birdy")
    old_token = await _session(birdy, cluster)
    rotating = await cluster.start(
        "identity-rotating", IdentitySettings, build_identity, session_key=new_key, session_previous_key=old_key
    )
    rotated = await cluster.start("identity-rotated", IdentitySettings, build_identity, session_key=new_key)
    del rotating, rotated

    async def call(name: str, token: str) -> object:
        return await cluster.identity(name).ListAvailableProviders(
            id_pb.ListAvailableProvidersRequest(), metadata=_with(token, "username:ann@birdy")
        )

    await cluster.register_user(birdy, "username:ann@birdy")
    assert await call("identity-rotating", old_token)
    new_token = (
        await cluster.identity("identity-rotating").CreateSession(
            id_pb.CreateSessionRequest(), metadata=birdy.auth("birdy")
        )
    ).session_token
    assert await call("identity-rotated", new_token)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call("identity-rotated", old_token)
    assert error_reason(caught.value) == "SESSION_KEY_UNKNOWN"


async def test_the_sdk_renews_its_session_before_expiry_and_falls_back_to_assertions(cluster: Cluster) -> None:
    await cluster.start_identity(session_lifetime_s=60)
    birdy = await cluster.enlist("birdy")
    now = [time.time()]
    backend = ProviderBackend(
        "birdy",
        birdy.signing_key,
        identity_target=cluster.target("identity"),
        keydir_target=cluster.target("identity"),
        clock=lambda: now[0],
    )
    try:
        # Before any session: an assertion, and a renewal started in the background.
        first = dict(backend.credentials("birdy"))["authorization"]
        assert not first.startswith("Bearer ps1.")
        assert await backend.start_session()
        held = dict(backend.credentials("birdy"))["authorization"]
        assert held.startswith("Bearer ps1.")
        # Two thirds into its life the session is still presented while a new one is made.
        now[0] += 45
        assert dict(backend.credentials("birdy"))["authorization"] == held
        assert await backend.start_session()
        assert dict(backend.credentials("birdy"))["authorization"].startswith("Bearer ps1.")
        # Too close to expiry with no renewal: assertions again, never an expired session.
        now[0] += 200
        assert not dict(backend.credentials("birdy"))["authorization"].startswith("Bearer ps1.")
        # Per-call assertions on request.
        plain = ProviderBackend(
            "birdy",
            birdy.signing_key,
            identity_target=cluster.target("identity"),
            keydir_target=cluster.target("identity"),
            sessions=False,
        )
        assert not dict(plain.credentials("birdy"))["authorization"].startswith("Bearer ps1.")
        await plain.close()
    finally:
        await backend.close()
