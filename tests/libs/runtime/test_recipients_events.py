"""Identity's mute, consent and policy events drop the resolver's cached answers on both sides of a chat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from support.cluster import ADMIN, INTERNAL_TOKEN, Cluster, ProviderKeys

from parley.identity.v1 import identity_pb2 as id_pb
from parley_runtime.clients import internal_channel
from parley_runtime.recipients import IdentityRecipients, Recipient
from parley_runtime.redis_client import connect
from parley_stanza import Address

ANN = Address.parse("username:ann@birdy")
GUS = Address.parse("username:gus@gatekeeper/1")


@pytest.fixture
async def setup(cluster: Cluster) -> AsyncIterator[tuple[IdentityRecipients, dict[str, ProviderKeys]]]:
    await cluster.start_identity()
    keys = {name: await cluster.enlist(name) for name in ("birdy", "gatekeeper")}
    await cluster.register_user(keys["birdy"], str(ANN), devices=2, allow=["gatekeeper"])
    await cluster.register_user(keys["gatekeeper"], str(GUS.user), allow=["birdy"])
    # A cache far longer than any setting allows: only the events can make the answers change in time.
    channel = internal_channel(cluster.target("identity"), internal_token=INTERNAL_TOKEN, telemetry=cluster.telemetry)
    recipients = IdentityRecipients(channel, ttl_s=600)
    events = connect(cluster.redis_url, max_connections=1, blocking_reads_s=1.0)
    recipients.follow(events, block_ms=200)
    await asyncio.sleep(0.3)  # the follower reads from "now": let it start before the changes
    yield recipients, keys
    await recipients.stop()
    await events.aclose()
    await channel.close()


async def _until(recipients: IdentityRecipients, check: Callable[[Recipient], bool]) -> Recipient:
    """Asks (through the cache) until the answer about Gus asking for Ann passes ``check``."""
    async with asyncio.timeout(10):
        # The answer lives behind an RPC and a cache: there is no event to await.
        while not check(answer := await recipients.resolve(GUS, ANN)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return answer


async def test_mutes_reach_cached_answers(
    cluster: Cluster, setup: tuple[IdentityRecipients, dict[str, ProviderKeys]]
) -> None:
    recipients, keys = setup
    assert not (await recipients.resolve(GUS, ANN)).muted
    identity = cluster.identity()
    await identity.SetMute(id_pb.SetMuteRequest(provider_id="gatekeeper"), metadata=keys["birdy"].auth(str(ANN)))
    await _until(recipients, lambda answer: answer.muted)
    await identity.ClearMute(id_pb.ClearMuteRequest(provider_id="gatekeeper"), metadata=keys["birdy"].auth(str(ANN)))
    await _until(recipients, lambda answer: not answer.muted)


async def test_the_senders_own_consent_reaches_cached_answers(
    cluster: Cluster, setup: tuple[IdentityRecipients, dict[str, ProviderKeys]]
) -> None:
    recipients, keys = setup
    reachable = id_pb.Reachability.REACHABILITY_REACHABLE
    assert (await recipients.resolve(GUS, ANN)).reachability == reachable
    await cluster.identity().DisableThirdPartyChats(
        id_pb.DisableThirdPartyChatsRequest(), metadata=keys["gatekeeper"].auth(str(GUS.user))
    )
    answer = await _until(recipients, lambda answer: answer.reachability != reachable)
    assert answer.reachability == id_pb.Reachability.REACHABILITY_SENDER_CONSENT_MISSING
    assert answer.sender_consent == id_pb.ConsentState.CONSENT_STATE_DISABLED


async def test_policy_changes_reach_cached_answers(
    cluster: Cluster, setup: tuple[IdentityRecipients, dict[str, ProviderKeys]]
) -> None:
    recipients, _ = setup
    assert (await recipients.resolve(GUS, ANN)).device_ids == (1, 2)
    identity = cluster.identity()
    policy = id_pb.InteropPolicy(primary_device_only=True)
    await identity.SetInteropPolicy(id_pb.SetInteropPolicyRequest(provider_id="birdy", policy=policy), metadata=ADMIN)
    await _until(recipients, lambda answer: answer.device_ids == (1,))
    await identity.SetInteropPolicy(
        id_pb.SetInteropPolicyRequest(provider_id="gatekeeper", policy=id_pb.InteropPolicy(allowed_regions=["EU"])),
        metadata=ADMIN,
    )
    answer = await _until(recipients, lambda answer: answer.device_ids == ())
    assert answer.reachability == id_pb.Reachability.REACHABILITY_SENDER_POLICY
    assert answer.policy_rule == "region"
