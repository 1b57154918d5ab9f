"""Interop consent at the identity service: off by default, enable, change, disable, and an event per change.

Every refused change must leave the stored consent exactly as it was and emit no event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster, ProviderKeys, error_reason

from parley.events.v1.events_pb2 import ConsentChanged, Event
from parley.identity.v1 import identity_pb2 as pb
from parley_runtime import redis_keys

USER = "username:ann@gatekeeper"
OFF = pb.ConsentState.CONSENT_STATE_OFF
ENABLED = pb.ConsentState.CONSENT_STATE_ENABLED
DISABLED = pb.ConsentState.CONSENT_STATE_DISABLED
SEPARATE = pb.InboxMode.INBOX_MODE_SEPARATE
MERGED = pb.InboxMode.INBOX_MODE_MERGED


@pytest.fixture
async def gatekeeper(cluster: Cluster) -> ProviderKeys:
    """The user's provider, with two approved third-party providers and one pending; the user registered."""
    await cluster.start_identity()
    keys = await cluster.enlist("gatekeeper")
    await cluster.enlist("birdy")
    await cluster.enlist("robin")
    await cluster.enlist("pending", approve=False)
    await cluster.register_user(keys, USER)
    return keys


async def _consent_events(redis_url: str) -> list[ConsentChanged]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrange(redis_keys.event_stream("identity"))
    finally:
        await client.aclose()
    events = [Event.FromString(fields[b"event"]) for _, fields in entries if fields[b"type"] == b"consent_changed"]
    return [event.consent_changed for event in events]


async def _consent(cluster: Cluster, keys: ProviderKeys) -> pb.Consent:
    return (await cluster.identity().GetConsent(pb.GetConsentRequest(), metadata=keys.auth(USER))).consent


async def _enable(cluster: Cluster, keys: ProviderKeys, allowed: list[str], inbox: int = 0) -> pb.Consent:
    request = pb.EnableThirdPartyChatsRequest(allowed_providers=allowed, inbox_mode=inbox)
    return (await cluster.identity().EnableThirdPartyChats(request, metadata=keys.auth(USER))).consent


async def test_consent_is_off_by_default(cluster: Cluster, gatekeeper: ProviderKeys, redis_url: str) -> None:
    consent = await _consent(cluster, gatekeeper)
    assert (consent.state, consent.inbox_mode, list(consent.allowed_providers)) == (OFF, SEPARATE, [])
    assert consent.updated_at_ms > 0
    assert await _consent_events(redis_url) == []


async def test_update_or_disable_while_off_is_refused(
    cluster: Cluster, gatekeeper: ProviderKeys, redis_url: str
) -> None:
    identity = cluster.identity()
    before = await _consent(cluster, gatekeeper)
    # Built lazily: a grpc.aio call starts as soon as it is created.
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: identity.UpdateConsent(pb.UpdateConsentRequest(inbox_mode=MERGED), metadata=gatekeeper.auth(USER)),
        lambda: identity.UpdateConsent(
            pb.UpdateConsentRequest(allowed_providers=["birdy"], replace_allowed_providers=True),
            metadata=gatekeeper.auth(USER),
        ),
        lambda: identity.DisableThirdPartyChats(pb.DisableThirdPartyChatsRequest(), metadata=gatekeeper.auth(USER)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call()
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(error.value) == "INVALID_TRANSITION"
    assert await _consent(cluster, gatekeeper) == before
    assert await _consent_events(redis_url) == []


@pytest.mark.parametrize("provider", ["nobody", "pending"])
async def test_enable_with_an_unknown_or_unapproved_provider_is_refused(
    cluster: Cluster, gatekeeper: ProviderKeys, redis_url: str, provider: str
) -> None:
    before = await _consent(cluster, gatekeeper)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _enable(cluster, gatekeeper, ["birdy", provider])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "INVALID_FIELD"
    assert "allowed_providers" in error.value.details()
    assert await _consent(cluster, gatekeeper) == before
    assert await _consent_events(redis_url) == []


async def test_unknown_inbox_mode_is_refused(cluster: Cluster, gatekeeper: ProviderKeys, redis_url: str) -> None:
    before = await _consent(cluster, gatekeeper)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _enable(cluster, gatekeeper, ["birdy"], inbox=7)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "INVALID_FIELD"
    assert await _consent(cluster, gatekeeper) == before
    assert await _consent_events(redis_url) == []


async def test_consent_lifecycle_emits_an_event_per_change(
    cluster: Cluster, gatekeeper: ProviderKeys, redis_url: str
) -> None:
    identity = cluster.identity()

    enabled = await _enable(cluster, gatekeeper, ["birdy", "birdy"])
    assert (enabled.state, enabled.inbox_mode, list(enabled.allowed_providers)) == (ENABLED, SEPARATE, ["birdy"])
    assert await _consent(cluster, gatekeeper) == enabled

    merged = await identity.UpdateConsent(pb.UpdateConsentRequest(inbox_mode=MERGED), metadata=gatekeeper.auth(USER))
    assert (merged.consent.inbox_mode, list(merged.consent.allowed_providers)) == (MERGED, ["birdy"])

    replaced = await identity.UpdateConsent(
        pb.UpdateConsentRequest(allowed_providers=["robin", "birdy"], replace_allowed_providers=True),
        metadata=gatekeeper.auth(USER),
    )
    assert (replaced.consent.inbox_mode, list(replaced.consent.allowed_providers)) == (MERGED, ["birdy", "robin"])

    # A refused replacement keeps the previous list.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.UpdateConsent(
            pb.UpdateConsentRequest(allowed_providers=["pending"], replace_allowed_providers=True),
            metadata=gatekeeper.auth(USER),
        )
    assert error_reason(error.value) == "INVALID_FIELD"
    assert await _consent(cluster, gatekeeper) == replaced.consent

    narrowed = await identity.UpdateConsent(
        pb.UpdateConsentRequest(allowed_providers=["robin"], replace_allowed_providers=True),
        metadata=gatekeeper.auth(USER),
    )
    assert list(narrowed.consent.allowed_providers) == ["robin"]

    disabled = await identity.DisableThirdPartyChats(pb.DisableThirdPartyChatsRequest(), metadata=gatekeeper.auth(USER))
    # The allowed providers are kept: they are the providers whose existing chats are now read-only.
    assert (disabled.consent.state, list(disabled.consent.allowed_providers)) == (DISABLED, ["robin"])
    assert await _consent(cluster, gatekeeper) == disabled.consent

    with pytest.raises(grpc.aio.AioRpcError) as read_only:
        await identity.UpdateConsent(pb.UpdateConsentRequest(inbox_mode=SEPARATE), metadata=gatekeeper.auth(USER))
    assert read_only.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(read_only.value) == "INVALID_TRANSITION"
    assert await _consent(cluster, gatekeeper) == disabled.consent

    events = await _consent_events(redis_url)
    assert [(e.address, e.state, list(e.allowed_providers), e.inbox_mode) for e in events] == [
        (USER, "CONSENT_STATE_ENABLED", ["birdy"], "INBOX_MODE_SEPARATE"),
        (USER, "CONSENT_STATE_ENABLED", ["birdy"], "INBOX_MODE_MERGED"),
        (USER, "CONSENT_STATE_ENABLED", ["birdy", "robin"], "INBOX_MODE_MERGED"),
        (USER, "CONSENT_STATE_ENABLED", ["robin"], "INBOX_MODE_MERGED"),
        (USER, "CONSENT_STATE_DISABLED", ["robin"], "INBOX_MODE_MERGED"),
    ]


async def test_a_disabled_user_can_enable_again(cluster: Cluster, gatekeeper: ProviderKeys) -> None:
    await _enable(cluster, gatekeeper, ["birdy"], inbox=MERGED)
    await cluster.identity().DisableThirdPartyChats(pb.DisableThirdPartyChatsRequest(), metadata=gatekeeper.auth(USER))
    again = await _enable(cluster, gatekeeper, ["robin"])
    # UNSPECIFIED keeps the inbox mode chosen before.
    assert (again.state, again.inbox_mode, list(again.allowed_providers)) == (ENABLED, MERGED, ["robin"])


async def test_consent_of_an_unregistered_user_is_not_found(
    cluster: Cluster, gatekeeper: ProviderKeys, redis_url: str
) -> None:
    stranger = "username:zed@gatekeeper"
    identity = cluster.identity()
    enable = pb.EnableThirdPartyChatsRequest(allowed_providers=["birdy"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.EnableThirdPartyChats(enable, metadata=gatekeeper.auth(stranger))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(refused.value) == "USER_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as absent:
        await identity.GetConsent(pb.GetConsentRequest(), metadata=gatekeeper.auth(stranger))
    assert error_reason(absent.value) == "USER_NOT_FOUND"
    assert await _consent_events(redis_url) == []
