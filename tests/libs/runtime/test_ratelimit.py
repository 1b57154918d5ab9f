"""Token buckets on a real Redis: the burst passes, then calls are refused with the time until one could pass."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime import redis_keys
from parley_runtime.errors import Code, ParleyError
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_runtime.redis_client import Redis, connect

# One token per 100 s: nothing refills while a test runs, however slow the machine.
SLOW = Limit("slow", capacity=3, per_second=0.01)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = connect(redis_url)
    yield redis
    await redis.aclose()


async def test_burst_then_refusal_with_retry_time(client: Redis) -> None:
    limiter = RateLimiter(client)
    assert [await limiter.try_take("username:ann@birdy", SLOW) for _ in range(3)] == [0, 0, 0]
    retry_after_ms = await limiter.try_take("username:ann@birdy", SLOW)
    assert 0 < retry_after_ms <= 100_000
    with pytest.raises(ParleyError) as error:
        await limiter.take("username:ann@birdy", SLOW)
    assert (error.value.code, error.value.reason) == (Code.RESOURCE_EXHAUSTED, ErrorReason.ERROR_REASON_RATE_LIMITED)
    assert 0 < int(error.value.metadata["retry_after_ms"]) <= 100_000


async def test_subjects_and_buckets_are_independent(client: Redis) -> None:
    limiter = RateLimiter(client)
    for _ in range(3):
        await limiter.take("username:ann@birdy", SLOW)
    assert await limiter.try_take("username:ann@birdy", SLOW) > 0
    assert await limiter.try_take("username:bob@birdy", SLOW) == 0
    assert await limiter.try_take("username:ann@birdy", Limit("other", capacity=1, per_second=0.01)) == 0


async def test_cost_takes_several_tokens(client: Redis) -> None:
    limiter = RateLimiter(client)
    assert await limiter.try_take("birdy", SLOW, cost=2) == 0
    # One token is left: a cost of 2 is refused and takes nothing, so a cost of 1 still passes.
    assert await limiter.try_take("birdy", SLOW, cost=2) > 0
    assert await limiter.try_take("birdy", SLOW, cost=1) == 0


async def test_bucket_refills_and_expires(client: Redis) -> None:
    limiter = RateLimiter(client)
    fast = Limit("fast", capacity=1, per_second=20)
    assert await limiter.try_take("birdy", fast) == 0
    assert 0 < await limiter.try_take("birdy", fast) <= 50
    ttl_ms = await client.pttl(redis_keys.rate_limit("birdy", "fast"))
    # Idle buckets cost no memory: the key expires about when the bucket would be full again.
    assert 0 < ttl_ms <= 1_050
    deadline = time.monotonic() + 5
    while await limiter.try_take("birdy", fast) != 0:
        assert time.monotonic() < deadline, "the bucket never refilled"
        await asyncio.sleep(0.01)


async def test_buckets_taken_together_are_charged_together_or_not_at_all(client: Redis) -> None:
    limiter = RateLimiter(client)
    user = Limit("user", capacity=1, per_second=0.01)
    provider = Limit("provider", capacity=3, per_second=0.01)
    checks = [("username:ann@birdy", user), ("birdy", provider)]
    await limiter.take_together("birdy", checks)
    # Ann's own bucket is empty: her refusals must not use up what her provider's other users may still take.
    for _ in range(5):
        with pytest.raises(ParleyError) as error:
            await limiter.take_together("birdy", checks)
        assert error.value.metadata["limit"] == "user"
        assert 0 < int(error.value.metadata["retry_after_ms"]) <= 100_000
    await limiter.take_together("birdy", [("username:bob@birdy", user), ("birdy", provider)])
    await limiter.take_together("birdy", [("username:cat@birdy", user), ("birdy", provider)])
    # Now the provider's bucket is empty, and its refusal does not touch Dan's bucket.
    with pytest.raises(ParleyError) as error:
        await limiter.take_together("birdy", [("username:dan@birdy", user), ("birdy", provider)])
    assert error.value.metadata["limit"] == "provider"
    assert await client.exists(redis_keys.grouped_rate_limit("birdy", "username:dan@birdy", "user")) == 0


async def test_buckets_taken_together_share_their_groups_slot(client: Redis) -> None:
    limiter = RateLimiter(client)
    await limiter.take_together("birdy", [("username:ann@birdy", SLOW), ("birdy", SLOW)])
    keys = sorted(key.decode() for key in await client.keys("rl:*"))
    assert keys == ["rl:{birdy}:slow:birdy", "rl:{birdy}:slow:username:ann@birdy"]
