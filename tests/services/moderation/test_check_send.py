"""CheckSend over real gRPC and Redis: provider status, every limit, first contact, blocks, one round trip.

Buckets get tiny capacities and a refill rate near zero, so no token comes back while a test runs and no
assertion depends on the clock.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.cluster import ADMIN, Cluster, error_reason
from support.moderation import NO_REFILL, check, start_with_providers, verdict_counts
from support.telemetry import redis_spans_of

from parley.common.v1.common_pb2 import ErrorReason
from parley.identity.v1 import identity_pb2 as pb_identity
from parley.moderation.v1 import moderation_pb2 as pb

BOB = "phone:+4915112345678@gatekeeper"
DAVE = "username:dave@gatekeeper"
ALICE = "username:alice@birdy"
CAROL = "username:carol@birdy"
ZOE = "username:zoe@birdy"

ALLOW = pb.VERDICT_ALLOW
DROP = pb.VERDICT_DROP_SILENTLY
REFUSE = pb.VERDICT_REFUSE


def _refusal(response: pb.CheckSendResponse) -> tuple[int, str, str]:
    return response.verdict, ErrorReason.Name(response.reason).removeprefix("ERROR_REASON_"), response.limit


async def test_an_ordinary_send_is_allowed(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(cluster)
    response = await check(moderation, f"{ALICE}/1", BOB, fan_out=3)
    assert response.verdict == ALLOW
    assert response.reason == ErrorReason.ERROR_REASON_UNSPECIFIED
    assert (response.retry_after_ms, response.limit) == (0, "")


async def test_the_sender_bucket_refuses_once_empty_and_names_itself(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(cluster, send_burst=2, send_per_second=NO_REFILL)
    assert [(await check(moderation, f"{ALICE}/1", BOB)).verdict for _ in range(2)] == [ALLOW, ALLOW]
    refused = await check(moderation, f"{ALICE}/2", BOB)  # another device of the same user shares the bucket
    assert _refusal(refused) == (REFUSE, "RATE_LIMITED", "sender")
    assert refused.retry_after_ms > 1000
    # Another sender has a bucket of its own.
    assert (await check(moderation, f"{CAROL}/1", BOB)).verdict == ALLOW


async def test_first_contact_is_limited_until_the_recipient_replies(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(cluster, first_contact_burst=2, first_contact_per_second=NO_REFILL)
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW
    assert (await check(moderation, f"{ALICE}/1", DAVE)).verdict == ALLOW
    # Every message to a user who never replied is a first contact, not only the first one.
    assert _refusal(await check(moderation, f"{ALICE}/1", BOB)) == (REFUSE, "RATE_LIMITED", "first_contact")
    assert _refusal(await check(moderation, f"{ALICE}/1", "username:erin@gatekeeper"))[2] == "first_contact"
    # Bob writes back (Alice had contacted him, so his reply is no first contact of his own).
    assert (await check(moderation, f"{BOB}/1", ALICE)).verdict == ALLOW
    assert [(await check(moderation, f"{ALICE}/1", BOB)).verdict for _ in range(3)] == [ALLOW] * 3
    # Dave never replied.
    assert _refusal(await check(moderation, f"{ALICE}/1", DAVE))[2] == "first_contact"


async def test_minted_senders_share_their_providers_first_contact_budget(cluster: Cluster) -> None:
    # Regression (issue 10): each fresh sender has a full first-contact bucket of its own, so a provider minting
    # users reached any number of strangers. Its users now share one first-contact budget as well.
    moderation, _ = await start_with_providers(
        cluster, provider_first_contact_burst=3, provider_first_contact_per_second=NO_REFILL
    )
    minted = [f"username:minted{index}@birdy/1" for index in range(6)]
    decisions = [_refusal(await check(moderation, sender, BOB)) for sender in minted]
    assert decisions[:3] == [(ALLOW, "UNSPECIFIED", "")] * 3
    assert decisions[3:] == [(REFUSE, "RATE_LIMITED", "provider_first_contact")] * 3
    refused = await check(moderation, f"{CAROL}/1", DAVE)
    assert _refusal(refused)[2] == "provider_first_contact"
    assert refused.retry_after_ms > 1000
    # Messages within a conversation are no first contacts: Bob answers, and his correspondent goes on writing.
    assert (await check(moderation, f"{BOB}/1", "username:minted0@birdy")).verdict == ALLOW
    assert [(await check(moderation, minted[0], BOB)).verdict for _ in range(3)] == [ALLOW] * 3
    # The gatekeeper's users draw on the gatekeeper's budget.
    assert (await check(moderation, f"{DAVE}/1", ALICE)).verdict == ALLOW


async def test_a_first_contact_its_provider_refuses_takes_no_tokens(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(
        cluster,
        send_burst=2,
        send_per_second=NO_REFILL,
        first_contact_burst=2,
        first_contact_per_second=NO_REFILL,
        provider_burst=4,
        provider_per_second=NO_REFILL,
        provider_first_contact_burst=1,
        provider_first_contact_per_second=NO_REFILL,
        breaker_threshold=0,
    )
    assert (await check(moderation, f"{CAROL}/1", BOB)).verdict == ALLOW  # birdy's one first contact
    for _ in range(4):
        assert _refusal(await check(moderation, f"{ALICE}/1", BOB))[2] == "provider_first_contact"
    # Alice's send and first-contact tokens, and birdy's send tokens, all came back.
    assert (await check(moderation, f"{BOB}/1", ALICE)).verdict == ALLOW  # Bob writes to Alice first
    assert [(await check(moderation, f"{ALICE}/1", BOB)).verdict for _ in range(2)] == [ALLOW, ALLOW]
    assert _refusal(await check(moderation, f"{ALICE}/1", BOB))[2] == "sender"
    # Birdy's send bucket (4) lost three tokens: Carol's first contact and Alice's two replies.
    assert (await check(moderation, f"{BOB}/1", ZOE)).verdict == ALLOW
    assert [_refusal(await check(moderation, f"{ZOE}/1", BOB))[2] for _ in range(2)] == ["", "provider"]


async def test_a_refused_send_takes_no_sender_tokens(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(
        cluster,
        send_burst=3,
        send_per_second=NO_REFILL,
        first_contact_burst=1,
        first_contact_per_second=NO_REFILL,
    )
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW  # send 2 left, first contact 0 left
    for _ in range(5):
        assert _refusal(await check(moderation, f"{ALICE}/1", DAVE))[2] == "first_contact"
    assert (await check(moderation, f"{DAVE}/1", ALICE)).verdict == ALLOW  # Dave writes first
    # Both remaining send tokens are still there.
    assert [(await check(moderation, f"{ALICE}/1", DAVE)).verdict for _ in range(2)] == [ALLOW, ALLOW]
    assert _refusal(await check(moderation, f"{ALICE}/1", DAVE)) == (REFUSE, "RATE_LIMITED", "sender")


async def test_a_send_the_provider_refuses_takes_no_sender_tokens(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(cluster, send_burst=2, send_per_second=NO_REFILL, provider_quota=3)
    assert (await check(moderation, f"{ALICE}/1", BOB, fan_out=2)).verdict == ALLOW  # 1 sender token, 1 copy left
    for _ in range(3):
        assert _refusal(await check(moderation, f"{ALICE}/1", BOB, fan_out=2))[1] == "QUOTA_EXCEEDED"
    # The refused sends gave their sender token back: one more send fits both, then the sender is empty.
    assert (await check(moderation, f"{ALICE}/1", BOB, fan_out=1)).verdict == ALLOW
    assert _refusal(await check(moderation, f"{ALICE}/1", BOB, fan_out=1))[1:] == ("QUOTA_EXCEEDED", "provider_quota")


async def test_one_user_refused_alone_cannot_drain_the_providers_budget(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(
        cluster, send_burst=1, send_per_second=NO_REFILL, provider_burst=3, provider_per_second=NO_REFILL
    )
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW
    for _ in range(10):
        assert _refusal(await check(moderation, f"{ALICE}/1", BOB))[2] == "sender"
    # Birdy's bucket lost one token to Alice's allowed send, none to her refused ones.
    others = [CAROL, "username:zoe@birdy", "username:yves@birdy"]
    verdicts = [_refusal(await check(moderation, f"{other}/1", BOB)) for other in others]
    assert verdicts == [(ALLOW, "UNSPECIFIED", ""), (ALLOW, "UNSPECIFIED", ""), (REFUSE, "RATE_LIMITED", "provider")]


async def test_the_provider_bucket_is_shared_by_its_users(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(
        cluster, provider_burst=3, provider_per_second=NO_REFILL, breaker_threshold=0
    )
    verdicts = [(await check(moderation, sender, BOB)).verdict for sender in (f"{ALICE}/1", f"{CAROL}/1", f"{ALICE}/2")]
    assert verdicts == [ALLOW] * 3
    refused = await check(moderation, f"{CAROL}/1", BOB)
    assert _refusal(refused) == (REFUSE, "RATE_LIMITED", "provider")
    assert refused.retry_after_ms > 1000
    # The gatekeeper's users are limited by the gatekeeper's bucket, not birdy's.
    assert (await check(moderation, f"{BOB}/1", ALICE)).verdict == ALLOW


async def test_the_provider_quota_counts_device_copies(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(
        cluster, provider_quota=5, provider_quota_overrides={"gatekeeper": 100}, breaker_threshold=0
    )
    assert (await check(moderation, f"{ALICE}/1", BOB, fan_out=2)).verdict == ALLOW
    assert (await check(moderation, f"{CAROL}/1", BOB, fan_out=2)).verdict == ALLOW
    over = await check(moderation, f"{ALICE}/1", BOB, fan_out=2)
    assert _refusal(over) == (REFUSE, "QUOTA_EXCEEDED", "provider_quota")
    assert 0 < over.retry_after_ms <= 86_400_000  # until the daily window ends
    # The refused send took nothing: one copy still fits, then none.
    assert (await check(moderation, f"{ALICE}/1", BOB, fan_out=1)).verdict == ALLOW
    assert _refusal(await check(moderation, f"{ALICE}/1", BOB, fan_out=0))[1] == "QUOTA_EXCEEDED"  # 0 counts as 1
    # The gatekeeper's own quota.
    assert (await check(moderation, f"{BOB}/1", ALICE, fan_out=50)).verdict == ALLOW


async def test_the_circuit_breaker_cuts_off_a_provider_that_keeps_pushing(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(
        cluster, provider_burst=1, provider_per_second=NO_REFILL, breaker_threshold=3, breaker_cooldown_s=600
    )
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW
    for _ in range(3):
        assert _refusal(await check(moderation, f"{ALICE}/1", BOB))[1] == "RATE_LIMITED"
    throttled = await check(moderation, f"{CAROL}/1", DAVE)
    assert _refusal(throttled) == (REFUSE, "PROVIDER_THROTTLED", "provider_circuit")
    assert 590_000 < throttled.retry_after_ms <= 600_000
    assert (await check(moderation, f"{BOB}/1", ALICE)).verdict == ALLOW


async def test_a_blocked_sender_is_dropped_silently_on_every_device(cluster: Cluster) -> None:
    moderation, gatekeeper = await start_with_providers(cluster)
    await moderation.Block(pb.BlockRequest(address=f"{ALICE}/1"), metadata=gatekeeper.auth(BOB))
    for device in (1, 2, 7):
        response = await check(moderation, f"{ALICE}/{device}", BOB)
        assert response.verdict == DROP
        assert (response.reason, response.retry_after_ms, response.limit) == (0, 0, "")
    # Only Bob blocked Alice: she reaches Dave, and Carol reaches Bob.
    assert (await check(moderation, f"{ALICE}/1", DAVE)).verdict == ALLOW
    assert (await check(moderation, f"{CAROL}/1", BOB)).verdict == ALLOW
    await moderation.Unblock(pb.UnblockRequest(address=ALICE), metadata=gatekeeper.auth(BOB))
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW


async def test_a_blocked_sender_meets_the_same_limits_as_anyone(cluster: Cluster) -> None:
    """What a blocked sender can observe (verdicts of its sends turned into relay answers) must not change."""
    moderation, gatekeeper = await start_with_providers(cluster, send_burst=2, send_per_second=NO_REFILL)
    await moderation.Block(pb.BlockRequest(address=ALICE), metadata=gatekeeper.auth(BOB))
    blocked = [_refusal(await check(moderation, f"{ALICE}/1", BOB)) for _ in range(3)]
    free = [_refusal(await check(moderation, f"{CAROL}/1", BOB)) for _ in range(3)]
    assert [v for v, _, _ in blocked] == [DROP, DROP, REFUSE]
    assert [v for v, _, _ in free] == [ALLOW, ALLOW, REFUSE]
    assert blocked[2] == free[2] == (REFUSE, "RATE_LIMITED", "sender")


@pytest.mark.parametrize(
    ("provider_change", "reason"),
    [
        (pb_identity.SuspendProviderRequest, "PROVIDER_SUSPENDED"),
        (pb_identity.RevokeProviderRequest, "PROVIDER_REVOKED"),
    ],
)
async def test_the_kill_switch_reaches_check_send_within_a_second(
    cluster: Cluster, provider_change: type, reason: str
) -> None:
    moderation, _ = await start_with_providers(cluster)
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW
    await getattr(cluster.identity(), provider_change.__name__.removesuffix("Request"))(
        provider_change(provider_id="birdy"), metadata=ADMIN
    )
    deadline = time.monotonic() + 1.0
    response = await check(moderation, f"{ALICE}/1", BOB)
    while response.verdict == ALLOW and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        response = await check(moderation, f"{ALICE}/1", BOB)
    assert _refusal(response) == (REFUSE, reason, ""), "moderation still allowed the provider after one second"
    # Both directions: nobody reaches birdy's users either; other providers are untouched.
    assert _refusal(await check(moderation, f"{BOB}/1", CAROL))[1] == reason
    assert (await check(moderation, f"{BOB}/1", DAVE)).verdict == ALLOW


async def test_pending_and_unknown_providers_are_refused(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(cluster)
    await cluster.enlist("slowpoke", approve=False)
    # Moderation learns of the new provider from identity's feed, within moments: until then it is unknown.
    async with asyncio.timeout(5):
        while (refusal := _refusal(await check(moderation, "username:sam@slowpoke/1", BOB)))[1] == "UNKNOWN_PROVIDER":  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert refusal[1] == "PROVIDER_NOT_APPROVED"
    assert _refusal(await check(moderation, f"{BOB}/1", "username:sam@slowpoke"))[1] == "PROVIDER_NOT_APPROVED"
    assert _refusal(await check(moderation, "username:ghost@nowhere/1", BOB))[1] == "UNKNOWN_PROVIDER"


@pytest.mark.parametrize(
    ("sender", "recipient", "fan_out", "reason"),
    [
        ("", BOB, 1, "MISSING_FIELD"),
        (f"{ALICE}/1", "", 1, "MISSING_FIELD"),
        ("alice", BOB, 1, "INVALID_ADDRESS"),
        (f"{ALICE}/1", "phone:12@gatekeeper", 1, "INVALID_ADDRESS"),
        (f"{ALICE}/0", BOB, 1, "INVALID_ADDRESS"),
        (f"{ALICE}/1", BOB, 1001, "INVALID_FIELD"),
    ],
)
async def test_bad_input_is_refused_and_takes_nothing(
    cluster: Cluster, sender: str, recipient: str, fan_out: int, reason: str
) -> None:
    moderation, _ = await start_with_providers(
        cluster,
        send_burst=1,
        send_per_second=NO_REFILL,
        first_contact_burst=1,
        first_contact_per_second=NO_REFILL,
        provider_burst=1,
        provider_per_second=NO_REFILL,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(moderation, sender, recipient, fan_out)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason
    # Every bucket still holds its single token.
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW


async def test_a_decision_is_one_redis_round_trip(cluster: Cluster, spans: InMemorySpanExporter) -> None:
    moderation, _ = await start_with_providers(cluster)
    await check(moderation, f"{BOB}/1", ALICE)  # a conversation: Alice's sends to Bob are no first contacts
    await check(moderation, f"{ALICE}/1", BOB)  # scripts loaded
    spans.clear()
    await check(moderation, f"{ALICE}/1", BOB)
    redis_spans = redis_spans_of(spans, "/CheckSend")
    assert len(redis_spans) == 1
    assert (redis_spans[0].attributes or {}).get("db.redis.pipeline_length") == 3


async def test_a_first_contact_takes_a_second_round_trip_for_its_provider(
    cluster: Cluster, spans: InMemorySpanExporter
) -> None:
    moderation, _ = await start_with_providers(cluster)
    await check(moderation, f"{ALICE}/1", BOB)  # scripts loaded
    spans.clear()
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW  # Bob never wrote back
    lengths = [(span.attributes or {}).get("db.redis.pipeline_length") for span in redis_spans_of(spans, "/CheckSend")]
    assert lengths == [3, 1]


async def test_scripts_flushed_from_redis_are_loaded_again(cluster: Cluster, redis_url: str) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415 -- only this test talks to Redis directly

    moderation, _ = await start_with_providers(cluster, send_burst=2, send_per_second=NO_REFILL)
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW
    client = aioredis.Redis.from_url(redis_url)
    await client.script_flush()
    await client.aclose()
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == ALLOW
    # Each script ran exactly once for that send: the bucket is now empty, not overdrawn or untouched.
    assert _refusal(await check(moderation, f"{ALICE}/1", BOB))[2] == "sender"


async def test_verdicts_are_counted_by_reason(cluster: Cluster, metric_reader: InMemoryMetricReader) -> None:
    moderation, _ = await start_with_providers(cluster, send_burst=1, send_per_second=NO_REFILL)
    before = verdict_counts(metric_reader)
    await check(moderation, f"{ALICE}/1", BOB)
    await check(moderation, f"{ALICE}/1", BOB)
    after = verdict_counts(metric_reader)
    assert after.get(("ALLOW", "", ""), 0) - before.get(("ALLOW", "", ""), 0) == 1
    refused = ("REFUSE", "RATE_LIMITED", "sender")
    assert after.get(refused, 0) - before.get(refused, 0) == 1
