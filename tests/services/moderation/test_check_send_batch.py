"""CheckSendBatch over real gRPC and Redis: the same decisions and state as CheckSend one by one, or nothing.

Each equivalence test runs one scenario twice on the same server: as CheckSend calls one by one, then (after
removing every moderation key and setting up again) as one CheckSendBatch. Decisions and the Redis state left
behind must agree. Buckets refill at a rate near zero, so no assertion depends on the clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.cluster import INTERNAL, Cluster, ProviderKeys
from support.moderation import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    GHOST,
    NO_REFILL,
    ZOE,
    Send,
    check,
    clear_moderation_state,
    decision_summary,
    moderation_state,
    start_with_providers,
    verdict_counts,
)
from support.telemetry import redis_spans_of

from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_runtime import redis_keys

# Tight limits, so that one scenario meets every one of them; no refill while a test runs.
_TIGHT = {
    "send_burst": 6,
    "send_per_second": NO_REFILL,
    "first_contact_burst": 2,
    "first_contact_per_second": NO_REFILL,
    "provider_first_contact_per_second": NO_REFILL,
    "provider_burst": 30,
    "provider_per_second": NO_REFILL,
    "provider_quota": 14,
    "provider_quota_overrides": {"gatekeeper": 1000},
    "breaker_threshold": 3,
    "breaker_cooldown_s": 600,
}


async def _batch(moderation: moderation_pb2_grpc.ModerationServiceStub, sends: Sequence[Send]) -> list[tuple[Any, ...]]:
    response = await moderation.CheckSendBatch(
        pb.CheckSendBatchRequest(checks=[pb.CheckSendRequest(sender=s, recipient=r, fan_out=f) for s, r, f in sends]),
        metadata=INTERNAL,
    )
    assert len(response.decisions) == len(sends)
    return [decision_summary(decision) for decision in response.decisions]


async def _one_by_one(
    moderation: moderation_pb2_grpc.ModerationServiceStub, sends: Sequence[Send]
) -> list[tuple[Any, ...]]:
    return [decision_summary(await check(moderation, s, r, f)) for s, r, f in sends]


async def _prepare(
    client: aioredis.Redis, moderation: moderation_pb2_grpc.ModerationServiceStub, gatekeeper: ProviderKeys
) -> None:
    """Bob blocks Alice; Zoe is restricted (set directly: the restriction's causes are tested in test_reports)."""
    await moderation.Block(pb.BlockRequest(address=ALICE), metadata=gatekeeper.auth(BOB))
    await client.set(redis_keys.sender_restriction(ZOE), "test")


async def _both_ways(
    cluster: Cluster, redis_url: str, sends: Sequence[Send], **moderation_settings: object
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, Any], dict[str, Any]]:
    moderation, gatekeeper = await start_with_providers(cluster, **moderation_settings)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await _prepare(client, moderation, gatekeeper)
        alone = await _one_by_one(moderation, sends)
        alone_state = await moderation_state(client, exact=False)
        await clear_moderation_state(client)
        await _prepare(client, moderation, gatekeeper)
        batched = await _batch(moderation, sends)
        batched_state = await moderation_state(client, exact=False)
    finally:
        await client.aclose()
    return alone, batched, alone_state, batched_state


# A scenario that meets every rule, and sends after each kind of refusal that depend on it being exact:
# refunds given back before the next send, contacts recorded in order, breaker counts.
_SCENARIO: list[Send] = [
    (f"{ALICE}/1", BOB, 1),  # blocked: dropped, charged like any first contact (first-contact token 1)
    (f"{ALICE}/1", DAVE, 1),  # first contact: token 2, the last
    (f"{ALICE}/1", ERIN, 1),  # first contact refused; birdy's token and quota come back
    (f"{DAVE}/1", ALICE, 1),  # Alice wrote first: no first contact; Dave is now Alice's contact
    (f"{ALICE}/2", DAVE, 1),  # no first contact any more (Dave wrote back just before)
    (f"{ZOE}/1", BOB, 1),  # restricted; birdy's token and quota come back
    (f"{GHOST}/1", BOB, 1),  # unknown provider: decided without Redis
    (f"{ALICE}/1", DAVE, 6),  # birdy's quota: 3 + 6 = 9 of 14
    (f"{CAROL}/1", DAVE, 6),  # 15 > 14: quota refused (breaker 1); Carol's tokens come back
    (f"{CAROL}/1", DAVE, 5),  # 14: fits exactly, thanks to every refund before
    (f"{CAROL}/1", DAVE, 1),  # quota refused (breaker 2)
    (f"{CAROL}/1", BOB, 1),  # quota refused (breaker 3: open)
    (f"{ALICE}/1", DAVE, 1),  # the breaker refuses birdy
    (f"{BOB}/1", ALICE, 1),  # the gatekeeper is fine; Bob's first contact
    *[(f"{DAVE}/{device}", ALICE, 0) for device in (1, 2, 3, 1, 2, 1)],  # Dave's bucket (6) runs out at the 6th
    (f"{DAVE}/1", ERIN, 1),  # still empty, first contact or not
    (f"{ERIN}/1", ALICE, 1),  # Erin writes to Alice
    (f"{ALICE}/1", GHOST, 1),  # to an unknown provider's user
]


async def test_a_batch_decides_and_leaves_exactly_what_sends_one_by_one_do(cluster: Cluster, redis_url: str) -> None:
    alone, batched, alone_state, batched_state = await _both_ways(cluster, redis_url, _SCENARIO, **_TIGHT)
    assert batched == alone
    assert batched_state == alone_state
    # The scenario meets what it claims to, in this order.
    assert [decision[:3] for decision in alone] == [
        ("DROP_SILENTLY", "UNSPECIFIED", ""),
        ("ALLOW", "UNSPECIFIED", ""),
        ("REFUSE", "RATE_LIMITED", "first_contact"),
        ("ALLOW", "UNSPECIFIED", ""),
        ("ALLOW", "UNSPECIFIED", ""),
        ("REFUSE", "SENDER_RESTRICTED", ""),
        ("REFUSE", "UNKNOWN_PROVIDER", ""),
        ("ALLOW", "UNSPECIFIED", ""),
        ("REFUSE", "QUOTA_EXCEEDED", "provider_quota"),
        ("ALLOW", "UNSPECIFIED", ""),
        ("REFUSE", "QUOTA_EXCEEDED", "provider_quota"),
        ("REFUSE", "QUOTA_EXCEEDED", "provider_quota"),
        ("REFUSE", "PROVIDER_THROTTLED", "provider_circuit"),
        ("ALLOW", "UNSPECIFIED", ""),
        *[("ALLOW", "UNSPECIFIED", "")] * 5,
        ("REFUSE", "RATE_LIMITED", "sender"),
        ("REFUSE", "RATE_LIMITED", "sender"),
        ("ALLOW", "UNSPECIFIED", ""),
        ("REFUSE", "UNKNOWN_PROVIDER", ""),
    ]
    assert batched_state[redis_keys.provider_quota("birdy")]["used"] == "14"
    assert batched_state[redis_keys.provider_breaker("birdy")]["open_until"] == "True"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_batches_decide_as_sends_one_by_one(cluster: Cluster, redis_url: str, seed: int) -> None:
    users = [ALICE, CAROL, ZOE, BOB, DAVE, ERIN]
    rng = random.Random(seed)
    sends = [(f"{rng.choice(users)}/{rng.randint(1, 2)}", rng.choice(users), rng.randint(0, 4)) for _ in range(60)]
    settings = {**_TIGHT, "send_burst": 8, "provider_burst": 20, "breaker_threshold": 4}
    alone, batched, alone_state, batched_state = await _both_ways(cluster, redis_url, sends, **settings)
    assert batched == alone
    assert batched_state == alone_state
    # The draw met limits, so speculation past refunds was exercised, not only allowed sends.
    assert len({decision[:3] for decision in alone}) >= 4


@pytest.mark.parametrize("seed", [4, 5])
async def test_batches_with_provider_first_contact_refusals_decide_as_sends_one_by_one(
    cluster: Cluster, redis_url: str, seed: int
) -> None:
    # The provider's first-contact stage runs after a send's three scripts; a refusal there gives back what
    # they took and undoes the sends speculated after it.
    users = [ALICE, CAROL, ZOE, BOB, DAVE, ERIN]
    rng = random.Random(seed)
    sends = [(f"{rng.choice(users)}/1", rng.choice(users), rng.randint(0, 3)) for _ in range(60)]
    settings = {
        **_TIGHT,
        "send_burst": 10,
        "first_contact_burst": 5,
        "provider_burst": 40,
        "provider_quota": 60,
        "provider_first_contact_burst": 3,
        "provider_first_contact_per_second": NO_REFILL,
    }
    alone, batched, alone_state, batched_state = await _both_ways(cluster, redis_url, sends, **settings)
    assert batched == alone
    assert batched_state == alone_state
    assert ("REFUSE", "RATE_LIMITED", "provider_first_contact") in {decision[:3] for decision in alone}
    assert ("ALLOW", "UNSPECIFIED", "") in {decision[:3] for decision in alone}


def _conversations(rng: random.Random, users: Sequence[str], sends: int) -> list[Send]:
    """Runs of one to eight sends from one sender to one recipient, as a relay's frames bring them."""
    drawn: list[Send] = []
    while len(drawn) < sends:
        sender, recipient = rng.choice(users), rng.choice(users)
        drawn += [(f"{sender}/{rng.randint(1, 2)}", recipient, rng.randint(0, 3))] * rng.randint(1, 8)
    return drawn[:sends]


@pytest.mark.parametrize("seed", [6, 7, 8])
async def test_runs_of_sends_to_one_recipient_decide_as_sends_one_by_one(
    cluster: Cluster, redis_url: str, seed: int
) -> None:
    """A run of sends from one sender to one recipient is checked by one sender and one recipient script call; its
    sends must still decide as alone: buckets running out inside a run, first contacts, blocks, restrictions,
    refunds and speculation undone in the middle of a run."""
    rng = random.Random(seed)
    sends = _conversations(rng, [ALICE, CAROL, ZOE, BOB, DAVE, ERIN], 80)
    settings = {**_TIGHT, "send_burst": 9, "provider_burst": 45, "provider_quota": 90}
    alone, batched, alone_state, batched_state = await _both_ways(cluster, redis_url, sends, **settings)
    assert batched == alone
    assert batched_state == alone_state
    kinds = {decision[:3] for decision in alone}
    assert ("REFUSE", "RATE_LIMITED", "sender") in kinds
    assert ("ALLOW", "UNSPECIFIED", "") in kinds
    assert len(kinds) >= 4


async def test_a_run_with_a_contact_bound_of_one_decides_as_sends_one_by_one(cluster: Cluster, redis_url: str) -> None:
    """With room for one contact, a recipient's contacts change with every new sender: each send of a run after
    another sender's must find what it would alone."""
    sends = [(f"{ALICE}/1", DAVE, 1)] * 3 + [(f"{CAROL}/1", DAVE, 1)] * 3 + [(f"{DAVE}/1", ALICE, 1)] * 3
    settings = {**_TIGHT, "send_burst": 9, "first_contact_burst": 9, "max_contacts": 1}
    alone, batched, alone_state, batched_state = await _both_ways(cluster, redis_url, sends, **settings)
    assert batched == alone
    assert batched_state == alone_state
    assert [decision[0] for decision in alone] == ["ALLOW"] * 9


async def test_a_run_of_sends_to_one_recipient_is_three_scripts(cluster: Cluster, spans: InMemorySpanExporter) -> None:
    """A frame's worth of sends in one conversation costs one provider, one sender and one recipient script."""
    moderation, _ = await start_with_providers(cluster)
    await _batch(moderation, [(f"{BOB}/1", ALICE, 1)])  # scripts loaded; Bob wrote to Alice: no first contact
    spans.clear()
    decisions = await _batch(moderation, [(f"{ALICE}/1", BOB, 1), (f"{ALICE}/2", BOB, 2)] * 25)
    assert [decision[0] for decision in decisions] == ["ALLOW"] * 50
    redis_spans = redis_spans_of(spans, "/CheckSendBatch")
    assert len(redis_spans) == 1
    assert (redis_spans[0].attributes or {}).get("db.redis.pipeline_length") == 3


async def test_a_contact_forgotten_on_speculation_comes_back(cluster: Cluster, redis_url: str) -> None:
    """A send run on speculation whose record forgot a contact (the bound) must give it back before the rerun."""
    moderation, _ = await start_with_providers(
        cluster, max_contacts=1, first_contact_burst=1, first_contact_per_second=NO_REFILL
    )
    assert (await check(moderation, f"{DAVE}/1", BOB)).verdict == pb.VERDICT_ALLOW  # Bob's one contact: Dave
    assert (await check(moderation, f"{BOB}/1", ERIN)).verdict == pb.VERDICT_ALLOW  # Bob's first-contact token
    client = aioredis.Redis.from_url(redis_url)
    await client.set(redis_keys.sender_restriction(ZOE), "test")
    await client.aclose()
    decisions = await _batch(
        moderation,
        [
            (f"{ZOE}/1", DAVE, 1),  # restricted: birdy's token comes back, so what follows ran on speculation
            (f"{BOB}/1", DAVE, 1),  # Dave is Bob's contact: no first contact needed
            (f"{CAROL}/1", BOB, 1),  # Bob's new contact; the bound forgets Dave
        ],
    )
    assert [decision[:3] for decision in decisions] == [
        ("REFUSE", "SENDER_RESTRICTED", ""),
        ("ALLOW", "UNSPECIFIED", ""),
        ("ALLOW", "UNSPECIFIED", ""),
    ]


async def test_an_empty_batch_decides_nothing(cluster: Cluster) -> None:
    moderation, _ = await start_with_providers(cluster)
    assert await _batch(moderation, []) == []


def _error_info(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo")


@pytest.mark.parametrize(
    ("bad", "reason", "field"),
    [
        (("alice", BOB, 1), "INVALID_ADDRESS", "checks[2].sender"),
        ((f"{ALICE}/1", "", 1), "MISSING_FIELD", "checks[2].recipient"),
        ((f"{ALICE}/0", BOB, 1), "INVALID_ADDRESS", "checks[2].sender"),
        ((f"{ALICE}/1", BOB, 1001), "INVALID_FIELD", "checks[2].fan_out"),
    ],
)
async def test_a_malformed_entry_refuses_the_whole_batch_and_changes_nothing(
    cluster: Cluster, redis_url: str, bad: Send, reason: str, field: str
) -> None:
    moderation, _ = await start_with_providers(cluster, **_TIGHT)
    client = aioredis.Redis.from_url(redis_url)
    # State to leave alone: buckets, quota and contacts exist and have room for the batch's good entries.
    await _one_by_one(moderation, [(f"{ALICE}/1", DAVE, 1), (f"{DAVE}/1", ALICE, 1), (f"{CAROL}/1", BOB, 2)])
    before = await moderation_state(client, exact=True)
    good = [(f"{ALICE}/1", DAVE, 1), (f"{CAROL}/1", ERIN, 1)]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _batch(moderation, [*good, bad, (f"{BOB}/1", ALICE, 1)])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _error_info(error.value) == (reason, {"field": field})
    assert await moderation_state(client, exact=True) == before
    await client.aclose()


async def test_an_oversized_batch_is_refused_and_changes_nothing(cluster: Cluster, redis_url: str) -> None:
    moderation, _ = await start_with_providers(cluster, max_check_batch=3, **_TIGHT)
    client = aioredis.Redis.from_url(redis_url)
    await _one_by_one(moderation, [(f"{ALICE}/1", DAVE, 1), (f"{CAROL}/1", BOB, 2)])
    before = await moderation_state(client, exact=True)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _batch(moderation, [(f"{ALICE}/1", DAVE, 1)] * 4)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _error_info(error.value) == ("BATCH_TOO_LARGE", {"limit": "3", "field": "checks"})
    assert await moderation_state(client, exact=True) == before
    await client.aclose()
    # The limit itself is accepted.
    assert len(await _batch(moderation, [(f"{ALICE}/1", DAVE, 1)] * 3)) == 3


async def test_a_batch_of_allowed_sends_is_one_redis_round_trip(cluster: Cluster, spans: InMemorySpanExporter) -> None:
    moderation, _ = await start_with_providers(cluster)
    sends = [
        (f"{ALICE}/1", BOB, 1),
        (f"{CAROL}/2", DAVE, 3),
        (f"{BOB}/1", ALICE, 1),
        (f"{DAVE}/1", CAROL, 1),
        (f"{GHOST}/1", BOB, 1),
    ]
    await _batch(moderation, sends)  # scripts loaded, and every pair has written both ways: no first contacts
    spans.clear()
    decisions = await _batch(moderation, sends)
    assert [decision[0] for decision in decisions] == ["ALLOW", "ALLOW", "ALLOW", "ALLOW", "REFUSE"]
    redis_spans = redis_spans_of(spans, "/CheckSendBatch")
    assert len(redis_spans) == 1
    # The sender's and the recipient's script per send that reaches Redis (the unknown provider's is decided from
    # the provider cache), and one provider script per sender provider (birdy, gatekeeper) for all of its sends.
    assert (redis_spans[0].attributes or {}).get("db.redis.pipeline_length") == 2 * 4 + 2


async def test_every_decision_of_a_batch_is_counted(cluster: Cluster, metric_reader: InMemoryMetricReader) -> None:
    moderation, _ = await start_with_providers(cluster, send_burst=1, send_per_second=NO_REFILL)
    before = verdict_counts(metric_reader)
    await _batch(moderation, [(f"{ALICE}/1", BOB, 1), (f"{ALICE}/1", BOB, 1), (f"{GHOST}/1", BOB, 1)])
    after = verdict_counts(metric_reader)
    for key, added in [
        (("ALLOW", "", ""), 1),
        (("REFUSE", "RATE_LIMITED", "sender"), 1),
        (("REFUSE", "UNKNOWN_PROVIDER", ""), 1),
    ]:
        assert after.get(key, 0) - before.get(key, 0) == added, key
