"""The key directory's caches of identity's facts never outlive a change by more than a second.

Identity's events normally drop a cached answer within milliseconds; these tests wait out the one-second bound and
then require the change to hold, and the last one shows the bound holds with no event at all (a follower that
missed them while Redis was away). A suspended provider is covered by ``test_kill_switch_reaches_the_key_directory
_within_a_second`` in test_keydir.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support.cluster import INTERNAL_TOKEN, Cluster, ProviderKeys, error_reason
from support.keys import DeviceKeys

from parley.identity.v1 import identity_pb2 as pb_identity
from parley.keydir.v1 import keydir_pb2 as pb
from parley_runtime.clients import internal_channel
from parley_runtime.errors import ParleyError
from parley_runtime.recipients import IdentityRecipients
from parley_stanza import Address

BOB = "username:bob@gatekeeper"
ALICE = "username:alice@birdy"
CACHE_BOUND_S = 1.0


async def _setup(cluster: Cluster) -> tuple[ProviderKeys, ProviderKeys]:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(gatekeeper, BOB, devices=2, allow=["birdy"])
    await cluster.register_user(birdy, ALICE, devices=1, allow=["gatekeeper"])
    await cluster.start_keydir(recipient_cache_s=CACHE_BOUND_S)
    for device in (1, 2):
        await cluster.keydir().PublishKeys(DeviceKeys().publish_request(5), metadata=gatekeeper.auth(BOB, device))
    return gatekeeper, birdy


async def _fetch(cluster: Cluster, birdy: ProviderKeys, address: str) -> pb.FetchPreKeyBundlesResponse:
    return await cluster.keydir().FetchPreKeyBundles(
        pb.FetchPreKeyBundlesRequest(address=address), metadata=birdy.auth(ALICE, 1)
    )


async def test_a_withdrawn_consent_is_not_served_after_a_second(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    assert len((await _fetch(cluster, birdy, BOB)).bundles) == 2  # the answer is cached now
    await cluster.identity().UpdateConsent(
        pb_identity.UpdateConsentRequest(allowed_providers=[], replace_allowed_providers=True),
        metadata=gatekeeper.auth(BOB),
    )
    await asyncio.sleep(CACHE_BOUND_S)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _fetch(cluster, birdy, BOB)
    assert (refused.value.code(), error_reason(refused.value)) in {
        (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
        (grpc.StatusCode.FAILED_PRECONDITION, "READ_ONLY_CHAT"),
    }


async def test_a_removed_device_is_not_served_after_a_second(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    assert len((await _fetch(cluster, birdy, f"{BOB}/2")).bundles) == 1
    await cluster.keydir().GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=gatekeeper.auth(BOB, 2))
    await cluster.identity().RemoveDevice(pb_identity.RemoveDeviceRequest(device_id=2), metadata=gatekeeper.auth(BOB))
    await asyncio.sleep(CACHE_BOUND_S)
    with pytest.raises(grpc.aio.AioRpcError) as fetched:
        await _fetch(cluster, birdy, f"{BOB}/2")
    assert error_reason(fetched.value) == "DEVICE_NOT_FOUND"
    # The removed device cannot act either: its registration is no longer vouched for.
    with pytest.raises(grpc.aio.AioRpcError) as acting:
        await cluster.keydir().GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=gatekeeper.auth(BOB, 2))
    assert error_reason(acting.value) == "DEVICE_NOT_FOUND"


async def test_without_identity_events_answers_still_expire_within_a_second(cluster: Cluster) -> None:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    await cluster.register_user(gatekeeper, BOB, devices=2)
    channel = internal_channel(cluster.target("identity"), internal_token=INTERNAL_TOKEN, telemetry=cluster.telemetry)
    # No follower: only the time bound stands between a change and the cached answer.
    recipients = IdentityRecipients(channel, ttl_s=CACHE_BOUND_S)
    bob = Address.parse(BOB)
    try:
        assert (await recipients.resolve(bob, bob)).device_ids == (1, 2)
        await recipients.check_registered(bob, 2)
        await cluster.identity().RemoveDevice(
            pb_identity.RemoveDeviceRequest(device_id=2), metadata=gatekeeper.auth(BOB)
        )
        await asyncio.sleep(CACHE_BOUND_S)
        assert (await recipients.resolve(bob, bob)).device_ids == (1,)
        with pytest.raises(ParleyError) as refused:
            await recipients.check_registered(bob, 2)
        assert refused.value.reason_name == "DEVICE_NOT_FOUND"
    finally:
        await channel.close()
