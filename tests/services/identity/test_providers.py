"""Provider lifecycle through the identity service's admin API, over real gRPC and Redis."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import ADMIN, ALL_KINDS, INTERNAL, Cluster, ProviderKeys, error_reason

from parley.common.v1.common_pb2 import Feature, IdentifierKind, PageRequest, ProviderStatus
from parley.events.v1.events_pb2 import Event
from parley.identity.v1 import identity_pb2 as pb


async def _provider_ids(cluster: Cluster) -> list[str]:
    response = await cluster.identity().ListProviders(pb.ListProvidersRequest(), metadata=ADMIN)
    return [p.provider_id for p in response.providers]


async def _events(redis_url: str) -> list[Event]:
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{identity}")
    await client.aclose()
    return [Event.FromString(fields[b"event"]) for _, fields in entries]


def _enlist_request(provider_id: str = "birdy", **overrides: object) -> pb.EnlistProviderRequest:
    fields: dict[str, object] = {
        "provider_id": provider_id,
        "display_name": "Birdy",
        "signing_public_key": ProviderKeys(provider_id).public_key,
        "identifier_kinds": [IdentifierKind.IDENTIFIER_KIND_PHONE],
        "features": [Feature.FEATURE_TEXT, Feature.FEATURE_REACTIONS],
    }
    fields.update(overrides)
    return pb.EnlistProviderRequest(**fields)


async def test_enlist_needs_the_admin_token(cluster: Cluster) -> None:
    await cluster.start_identity()
    identity = cluster.identity()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await identity.EnlistProvider(_enlist_request())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(missing.value) == "TOKEN_MISSING"
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await identity.EnlistProvider(_enlist_request(), metadata=(("authorization", "Bearer nope"),))
    assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(wrong.value) == "ADMIN_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await identity.EnlistProvider(_enlist_request(), metadata=INTERNAL)
    assert internal.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _provider_ids(cluster) == []


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"provider_id": ""}, "MISSING_FIELD", "provider_id"),
        ({"provider_id": "Bad_Id"}, "INVALID_FIELD", "provider_id"),
        ({"display_name": ""}, "MISSING_FIELD", "display_name"),
        ({"display_name": "x" * 65}, "INVALID_FIELD", "display_name"),
        ({"signing_public_key": b"short"}, "INVALID_FIELD", "signing_public_key"),
        ({"signing_public_key": b""}, "MISSING_FIELD", "signing_public_key"),
        ({"identifier_kinds": []}, "MISSING_FIELD", "identifier_kinds"),
        ({"identifier_kinds": [IdentifierKind.IDENTIFIER_KIND_UNSPECIFIED]}, "INVALID_FIELD", "identifier_kinds"),
        ({"features": [Feature.FEATURE_REACTIONS]}, "INVALID_FIELD", "features"),
        ({"features": [Feature.FEATURE_TEXT, 999]}, "INVALID_FIELD", "features"),
        ({"mtls_client_cert_pem": "not a certificate"}, "INVALID_FIELD", "mtls_client_cert_pem"),
    ],
)
async def test_enlist_refuses_bad_input_and_changes_nothing(
    cluster: Cluster, overrides: dict[str, object], reason: str, field: str
) -> None:
    await cluster.start_identity()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.identity().EnlistProvider(_enlist_request(**overrides), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason
    assert field in error.value.details()
    assert await _provider_ids(cluster) == []


async def test_enlisting_twice_is_refused(cluster: Cluster) -> None:
    await cluster.start_identity()
    identity = cluster.identity()
    first = await identity.EnlistProvider(_enlist_request(), metadata=ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.EnlistProvider(_enlist_request(display_name="Other"), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error.value) == "ALREADY_EXISTS"
    stored = await identity.GetProvider(pb.GetProviderRequest(provider_id="birdy"), metadata=ADMIN)
    assert stored.provider == first.provider


async def test_lifecycle_events_and_transitions(cluster: Cluster, redis_url: str) -> None:
    await cluster.start_identity()
    identity = cluster.identity()
    enlisted = (await identity.EnlistProvider(_enlist_request(), metadata=ADMIN)).provider
    assert enlisted.status == ProviderStatus.PROVIDER_STATUS_PENDING

    approved = await identity.ApproveProvider(pb.ApproveProviderRequest(provider_id="birdy"), metadata=ADMIN)
    assert approved.provider.status == ProviderStatus.PROVIDER_STATUS_APPROVED
    suspended = await identity.SuspendProvider(
        pb.SuspendProviderRequest(provider_id="birdy", reason="abuse wave"), metadata=ADMIN
    )
    assert suspended.provider.status == ProviderStatus.PROVIDER_STATUS_SUSPENDED
    assert suspended.provider.status_reason == "abuse wave"
    await identity.ApproveProvider(pb.ApproveProviderRequest(provider_id="birdy"), metadata=ADMIN)
    revoked = await identity.RevokeProvider(
        pb.RevokeProviderRequest(provider_id="birdy", reason="contract ended"), metadata=ADMIN
    )
    assert revoked.provider.status == ProviderStatus.PROVIDER_STATUS_REVOKED
    assert revoked.provider.status_reason == "contract ended"

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.ApproveProvider(pb.ApproveProviderRequest(provider_id="birdy"), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error.value) == "INVALID_TRANSITION"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await identity.SuspendProvider(pb.SuspendProviderRequest(provider_id="nobody"), metadata=ADMIN)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(unknown.value) == "UNKNOWN_PROVIDER"

    events = await _events(redis_url)
    kinds = [event.WhichOneof("payload") for event in events]
    # The first approval announces the provider to users; re-approval after a suspension does not.
    assert kinds.count("provider_available") == 1
    assert [e.provider_status_changed.status for e in events if e.HasField("provider_status_changed")] == [
        ProviderStatus.PROVIDER_STATUS_APPROVED,
        ProviderStatus.PROVIDER_STATUS_SUSPENDED,
        ProviderStatus.PROVIDER_STATUS_APPROVED,
        ProviderStatus.PROVIDER_STATUS_REVOKED,
    ]
    assert all(len(event.event_id) == 32 and event.occurred_at_ms > 0 for event in events)


async def test_credentials_rotation_switches_the_verifying_key(cluster: Cluster) -> None:
    await cluster.start_identity()
    keys = await cluster.enlist("birdy", kinds=ALL_KINDS)
    identity = cluster.identity()
    await identity.ListAvailableProviders(pb.ListAvailableProvidersRequest(), metadata=keys.auth("username:a@birdy"))
    rotated = ProviderKeys("birdy")
    await identity.UpdateProviderCredentials(
        pb.UpdateProviderCredentialsRequest(provider_id="birdy", signing_public_key=rotated.public_key),
        metadata=ADMIN,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.ListAvailableProviders(
            pb.ListAvailableProvidersRequest(), metadata=keys.auth("username:a@birdy")
        )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error.value) == "TOKEN_INVALID"
    await identity.ListAvailableProviders(pb.ListAvailableProvidersRequest(), metadata=rotated.auth("username:a@birdy"))


async def test_list_providers_pages(cluster: Cluster) -> None:
    await cluster.start_identity()
    identity = cluster.identity()
    for name in ("aa", "bb", "cc", "dd", "ee"):
        await identity.EnlistProvider(_enlist_request(name), metadata=ADMIN)
    seen: list[str] = []
    token = ""
    while True:
        page = await identity.ListProviders(
            pb.ListProvidersRequest(page=PageRequest(page_size=2, page_token=token)), metadata=ADMIN
        )
        seen += [p.provider_id for p in page.providers]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == ["aa", "bb", "cc", "dd", "ee"]


async def test_users_see_only_approved_providers(cluster: Cluster) -> None:
    await cluster.start_identity()
    keys = await cluster.enlist("gatekeeper")
    await cluster.enlist("birdy")
    await cluster.enlist("pending", approve=False)
    response = await cluster.identity().ListAvailableProviders(
        pb.ListAvailableProvidersRequest(), metadata=keys.auth("username:ann@gatekeeper")
    )
    assert [p.provider_id for p in response.providers] == ["birdy", "gatekeeper"]
    assert all(Feature.FEATURE_TEXT in p.features for p in response.providers)


async def test_kill_switch_reaches_every_replica_within_a_second(cluster: Cluster) -> None:
    await cluster.start_identity()
    await cluster.start_identity()
    keys = await cluster.enlist("birdy")
    replica_b = cluster.identity("identity-1")
    request = pb.ListAvailableProvidersRequest()
    await replica_b.ListAvailableProviders(request, metadata=keys.auth("username:ann@birdy"))

    await cluster.identity("identity").SuspendProvider(pb.SuspendProviderRequest(provider_id="birdy"), metadata=ADMIN)
    deadline = time.monotonic() + 1.0
    refused: grpc.aio.AioRpcError | None = None
    while refused is None and time.monotonic() < deadline:
        try:
            await replica_b.ListAvailableProviders(request, metadata=keys.auth("username:ann@birdy"))
            await asyncio.sleep(0.01)
        except grpc.aio.AioRpcError as error:
            refused = error
    assert refused is not None, "replica B still accepted the suspended provider after one second"
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(refused) == "PROVIDER_SUSPENDED"


async def test_watch_providers_streams_a_snapshot_then_changes(cluster: Cluster) -> None:
    await cluster.start_identity()
    await cluster.enlist("birdy")
    identity = cluster.identity()
    stream = identity.WatchProviders(pb.WatchProvidersRequest(), metadata=INTERNAL)
    first = await stream.read()
    assert first.snapshot
    assert [p.provider_id for p in first.providers] == ["birdy"]
    await identity.SuspendProvider(pb.SuspendProviderRequest(provider_id="birdy"), metadata=ADMIN)
    change = await asyncio.wait_for(stream.read(), 5)
    while change.snapshot:  # a periodic resync may interleave; the change must still arrive
        change = await asyncio.wait_for(stream.read(), 5)
    assert change.providers[0].status == ProviderStatus.PROVIDER_STATUS_SUSPENDED
    stream.cancel()


async def test_watch_providers_is_internal_only(cluster: Cluster) -> None:
    await cluster.start_identity()
    keys = await cluster.enlist("birdy")
    stream = cluster.identity().WatchProviders(pb.WatchProvidersRequest(), metadata=keys.auth("username:x@birdy"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stream.read()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
