"""Prekey-drain guards that requesters minted by the thousand cannot dodge (issue 10, item 2).

The per-user fetch limit alone let 300 fetches of one user's bundle, each by a different fresh requester, drain
all of its one-time prekeys. Now each device hands out at most `drain_guard_claims` one-time prekeys per window
whoever asks (beyond it, bundles still go out, without one), and each provider's users together are limited.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.cluster import Cluster, ProviderKeys
from support.keys import DeviceKeys
from support.telemetry import sums

from parley.events.v1.events_pb2 import Event
from parley.keydir.v1 import keydir_pb2 as pb
from parley_sdk import error_reason

BOB = "phone:+4915112345678@gatekeeper"
REQUESTERS = 60
GUARD = 20


async def _requesters(cluster: Cluster, birdy: ProviderKeys, count: int) -> list[str]:
    users = [f"username:fan{index}@birdy" for index in range(count)]
    # Opted in for the gatekeeper: only users with third-party chats on may fetch its users' keys.
    await asyncio.gather(*(cluster.register_user(birdy, user, allow=["gatekeeper"]) for user in users))
    return users


async def _events(redis_url: str, kind: str) -> list[Event]:
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{keys}")
    await client.aclose()
    events = [Event.FromString(fields[b"event"]) for _, fields in entries]
    return [event for event in events if event.WhichOneof("payload") == kind]


async def test_many_requesters_cannot_drain_one_device(
    cluster: Cluster, redis_url: str, metric_reader: InMemoryMetricReader
) -> None:
    await cluster.start_identity()
    gatekeeper, birdy = await cluster.enlist("gatekeeper"), await cluster.enlist("birdy")
    await cluster.register_user(gatekeeper, BOB, allow=["birdy"])
    await cluster.start_keydir(drain_guard_claims=GUARD, drain_guard_window_s=600)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(100), metadata=gatekeeper.auth(BOB, 1))
    fans = await _requesters(cluster, birdy, REQUESTERS)
    withheld_before = sum(sums(metric_reader, "keydir.one_time_prekeys.withheld").values())

    async def fetch(fan: str) -> pb.PreKeyBundle:
        request = pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1")
        return (await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fan, 1))).bundles[0]

    bundles = await asyncio.gather(*(fetch(fan) for fan in fans))
    # Every fetch gets a bundle (sessions still form, on the signed and PQ prekeys), but only GUARD one-time keys go.
    assert len(bundles) == REQUESTERS
    handed_out = [b.one_time_prekey.key_id for b in bundles if not b.one_time_prekey_exhausted]
    assert len(handed_out) == len(set(handed_out)) == GUARD
    count = await keydir.GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=gatekeeper.auth(BOB, 1))
    assert count.one_time_prekey_count == 100 - GUARD
    drained = await _events(redis_url, "prekeys_drained")
    assert [(e.prekeys_drained.address, e.prekeys_drained.limit, e.prekeys_drained.window_s) for e in drained] == [
        (f"{BOB}/1", GUARD, 600)
    ]
    withheld = sum(sums(metric_reader, "keydir.one_time_prekeys.withheld").values()) - withheld_before
    assert withheld == REQUESTERS - GUARD


async def test_a_providers_users_together_are_limited(cluster: Cluster) -> None:
    await cluster.start_identity()
    gatekeeper, birdy = await cluster.enlist("gatekeeper"), await cluster.enlist("birdy")
    await cluster.register_user(gatekeeper, BOB, allow=["birdy"])
    await cluster.register_user(gatekeeper, "username:pal@gatekeeper")
    await cluster.start_keydir(provider_fetch_burst=5, provider_fetch_per_second=0.01)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(50), metadata=gatekeeper.auth(BOB, 1))
    fans = await _requesters(cluster, birdy, 6)
    request = pb.FetchPreKeyBundlesRequest(address=BOB)
    for fan in fans[:5]:
        await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fan, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fans[5], 1))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata = error_reason(error.value)
    assert reason == "RATE_LIMITED"
    assert metadata["limit"] == "keyfetch_provider"
    assert int(metadata["retry_after_ms"]) > 0
    # Another provider's users are not held back by birdy's.
    await keydir.FetchPreKeyBundles(request, metadata=gatekeeper.auth("username:pal@gatekeeper", 1))


async def test_a_refused_fetch_is_charged_to_no_limit(cluster: Cluster) -> None:
    """A requester refused by its own limit must not use up its provider's: a user retrying in a loop would
    otherwise lock every other user of its provider out."""
    await cluster.start_identity()
    gatekeeper, birdy = await cluster.enlist("gatekeeper"), await cluster.enlist("birdy")
    await cluster.register_user(gatekeeper, BOB, allow=["birdy"])
    await cluster.start_keydir(
        fetch_burst=1, fetch_per_second=0.01, provider_fetch_burst=3, provider_fetch_per_second=0.01
    )
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(10), metadata=gatekeeper.auth(BOB, 1))
    fans = await _requesters(cluster, birdy, 4)
    request = pb.FetchPreKeyBundlesRequest(address=BOB)
    await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fans[0], 1))
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fans[0], 1))
        assert error_reason(error.value)[1]["limit"] == "keyfetch"
    # The provider's bucket still holds the two tokens fans[0]'s refusals did not take.
    for fan in fans[1:3]:
        await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fan, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(fans[3], 1))
    assert error_reason(error.value)[1]["limit"] == "keyfetch_provider"
    count = await keydir.GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=gatekeeper.auth(BOB, 1))
    assert count.one_time_prekey_count == 10 - 3
