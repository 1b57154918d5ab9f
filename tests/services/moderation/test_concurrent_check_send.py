"""Concurrent CheckSend calls over real gRPC and Redis share pipelines, and decide exactly as one by one.

Calls that arrive while a pipeline is in flight are checked together in the next one. The order that counts is the
order the handler admitted them in, which the test records (gRPC alone does not promise one); the same sends are
then decided one by one in that order on a fresh state, and decisions and the Redis state left behind must agree.
Buckets refill at a rate near zero, so no assertion depends on the clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster, ProviderKeys, error_reason
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
    start_moderation,
    start_with_providers,
)

from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_moderation.handler import ModerationHandler
from parley_moderation.model import Decision, SendAttempt, SendChecks
from parley_moderation.store import RedisModerationStore
from parley_runtime import redis_keys
from parley_runtime.testing import RedisServer

_TIGHT = {
    "send_burst": 8,
    "send_per_second": NO_REFILL,
    "first_contact_burst": 3,
    "first_contact_per_second": NO_REFILL,
    "provider_first_contact_burst": 12,
    "provider_first_contact_per_second": NO_REFILL,
    "provider_burst": 40,
    "provider_per_second": NO_REFILL,
    "provider_quota": 60,
    "provider_quota_overrides": {"gatekeeper": 1000},
    "breaker_threshold": 4,
    "breaker_cooldown_s": 600,
}
_WAIT_S = 30


class _Recorder:
    """Records, without changing them, the sends the handler admits (in order) and the store's pipelines."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.admitted: list[tuple[Send, list[Decision]]] = []
        self.pipeline_sizes: list[int] = []
        check_send = ModerationHandler.check_send
        check_send_many = RedisModerationStore.check_send_many

        async def recording_check_send(
            handler: ModerationHandler, sender: str, recipient: str, fan_out: int
        ) -> Decision:
            # A send is admitted (validated and queued for its pipeline) before the handler first waits, so the
            # order of these calls is the order of admission.
            decided: list[Decision] = []
            self.admitted.append(((sender, recipient, fan_out), decided))
            decided.append(await check_send(handler, sender, recipient, fan_out))
            return decided[0]

        async def recording_check_send_many(
            store: RedisModerationStore, attempts: Sequence[SendAttempt], *, now_ms: int
        ) -> list[SendChecks]:
            self.pipeline_sizes.append(len(attempts))
            return await check_send_many(store, attempts, now_ms=now_ms)

        monkeypatch.setattr(ModerationHandler, "check_send", recording_check_send)
        monkeypatch.setattr(RedisModerationStore, "check_send_many", recording_check_send_many)

    def sends(self) -> list[Send]:
        return [send for send, _ in self.admitted]

    def decisions(self) -> Iterator[tuple[Any, ...]]:
        for _, decided in self.admitted:
            assert decided, "a call was admitted but never decided"
            yield decision_summary(decided[0])


async def _prepare(
    client: aioredis.Redis, moderation: moderation_pb2_grpc.ModerationServiceStub, gatekeeper: ProviderKeys
) -> None:
    """Bob blocks Alice; Zoe is restricted (set directly: the restriction's causes are tested in test_reports)."""
    await moderation.Block(pb.BlockRequest(address=ALICE), metadata=gatekeeper.auth(BOB))
    await client.set(redis_keys.sender_restriction(ZOE), "test")


def _sends(seed: int, count: int) -> list[Send]:
    users = [ALICE, CAROL, ZOE, BOB, DAVE, ERIN, GHOST]
    rng = random.Random(seed)
    return [(f"{rng.choice(users)}/{rng.randint(1, 2)}", rng.choice(users), rng.randint(0, 4)) for _ in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_calls_decide_as_one_by_one_in_the_order_admitted(
    cluster: Cluster, redis_url: str, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    recorder = _Recorder(monkeypatch)
    moderation, gatekeeper = await start_with_providers(cluster, **_TIGHT)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await _prepare(client, moderation, gatekeeper)
        sends = _sends(seed, 80)
        async with asyncio.timeout(_WAIT_S):
            responses = await asyncio.gather(*(check(moderation, *send) for send in sends))
        together = list(recorder.decisions())
        together_state = await moderation_state(client, exact=False)
        # Calls did share pipelines (otherwise this test would prove nothing about sharing).
        assert max(recorder.pipeline_sizes) > 1
        assert len(recorder.pipeline_sizes) < len(responses)
        admitted = recorder.sends()
        # Every caller got the decision made for its own send.
        assert sorted(zip(sends, map(decision_summary, responses), strict=True)) == sorted(
            zip(admitted, together, strict=True)
        )
        await clear_moderation_state(client)
        await _prepare(client, moderation, gatekeeper)
        alone = [decision_summary(await check(moderation, *send)) for send in admitted]
        alone_state = await moderation_state(client, exact=False)
    finally:
        await client.aclose()
    assert together == alone
    assert together_state == alone_state
    # The draw met limits, so refunds and speculation past them were exercised, not only allowed sends.
    assert len({decision[:3] for decision in alone}) >= 4


async def test_a_redis_failure_fails_every_caller_of_a_shared_pipeline(
    own_redis_cluster: tuple[Cluster, RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(monkeypatch)
    cluster, redis_server = own_redis_cluster
    await cluster.start_identity()
    await cluster.enlist("gatekeeper")
    await cluster.enlist("birdy")
    moderation = await start_moderation(cluster)
    assert (await check(moderation, f"{ALICE}/1", BOB)).verdict == pb.VERDICT_ALLOW

    redis_server.stop()
    recorder.pipeline_sizes.clear()
    async with asyncio.timeout(_WAIT_S):
        outcomes = await asyncio.gather(
            *(check(moderation, f"{sender}/1", BOB) for sender in [ALICE, CAROL, ZOE] * 8), return_exceptions=True
        )
    assert max(recorder.pipeline_sizes) > 1  # some failed pipeline was shared
    for outcome in outcomes:
        # Never ALLOW without the checks: each caller gets the error the relay refuses its send with.
        assert isinstance(outcome, grpc.aio.AioRpcError), outcome
        assert outcome.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(outcome) == "DEPENDENCY_UNAVAILABLE"

    redis_server.start()
    async with asyncio.timeout(_WAIT_S):
        responses = await asyncio.gather(*(check(moderation, f"{sender}/1", BOB) for sender in [ALICE, CAROL, ZOE]))
    assert [response.verdict for response in responses] == [pb.VERDICT_ALLOW] * 3
