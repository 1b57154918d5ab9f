"""The store's undo scripts on real Redis: they undo a speculated check, but never another call's change.

A batch undoes what it ran on speculation one round trip later; meanwhile another replica may have decided a
send of the same provider or recorded the same contact. These tests make that change by hand between the
speculated script and its undo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from parley_moderation.model import SendShape
from parley_moderation.store import check_send_calls, provider_check_call
from parley_runtime import redis_keys
from parley_runtime.redis_client import load_script

SENDER = "username:alice@birdy"
RECIPIENT = "username:bob@gatekeeper"
BREAKER = redis_keys.provider_breaker("birdy")
CONTACTS = redis_keys.contacts(RECIPIENT)
NOW_MS = 1_763_788_800_000
# A provider bucket that is empty from the start, so that every send is a refusal that counts toward the breaker.
SHAPE = SendShape(
    sender_capacity=100,
    sender_per_second=1e-9,
    first_contact_capacity=100,
    first_contact_per_second=1e-9,
    provider_capacity=0.5,
    provider_per_second=1e-9,
    provider_first_contact_capacity=100,
    provider_first_contact_per_second=1e-9,
    provider_quota=0,
    quota_window_ms=86_400_000,
    breaker_threshold=100,
    breaker_window_ms=600_000,
    breaker_cooldown_ms=600_000,
    max_contacts=10,
    contact_ttl_ms=86_400_000,
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def _run(client: aioredis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    return await load_script(client, "parley_moderation", name)(keys=keys, args=args)


async def _check_provider(client: aioredis.Redis) -> list[Any]:
    keys, args = check_send_calls(SENDER, RECIPIENT, "birdy", fan_out=1, shape=SHAPE, now_ms=NOW_MS)[2]
    (reply,) = await _run(client, "check_provider", keys, args)
    assert int(reply[0]) == 3  # the bucket refused, and the refusal counted
    return reply


async def _check_recipient(client: aioredis.Redis) -> list[Any]:
    keys, args = check_send_calls(SENDER, RECIPIENT, "birdy", fan_out=1, shape=SHAPE, now_ms=NOW_MS)[1]
    (reply,) = await _run(client, "check_recipient", keys, args)
    assert int(reply[0]) == 0
    return reply


async def test_a_speculated_breaker_count_is_undone(client: aioredis.Redis) -> None:
    await _check_provider(client)
    before = await client.hgetall(BREAKER)
    reply = await _check_provider(client)
    assert await client.hget(BREAKER, "failures") == b"2"
    assert await _run(client, "restore_breaker", [BREAKER], reply[3:10]) == 1
    assert await client.hgetall(BREAKER) == before
    assert await client.pttl(BREAKER) > 0


async def test_an_undo_keeps_what_another_call_counted_since(client: aioredis.Redis) -> None:
    reply = await _check_provider(client)
    await _check_provider(client)  # another replica's refusal of the same provider, before the undo
    assert await _run(client, "restore_breaker", [BREAKER], reply[3:10]) == 0
    assert await client.hget(BREAKER, "failures") == b"2"


async def test_a_speculated_first_contact_record_is_undone(client: aioredis.Redis) -> None:
    await client.zadd(CONTACTS, {"username:carol@birdy": 1})
    reply = await _check_recipient(client)
    assert await client.zscore(CONTACTS, SENDER) == NOW_MS
    await _run(client, "restore_contacts", [CONTACTS], [SENDER, reply[1], NOW_MS, *reply[2:]])
    assert await client.zrange(CONTACTS, 0, -1, withscores=True) == [(b"username:carol@birdy", 1.0)]


async def test_an_undo_keeps_a_contact_another_call_recorded_since(client: aioredis.Redis) -> None:
    reply = await _check_recipient(client)
    await client.zadd(CONTACTS, {SENDER: NOW_MS + 5})  # the same sender, recorded again by another replica
    await _run(client, "restore_contacts", [CONTACTS], [SENDER, reply[1], NOW_MS, *reply[2:]])
    assert await client.zscore(CONTACTS, SENDER) == NOW_MS + 5


async def test_one_provider_call_checks_its_sends_as_one_call_each(client: aioredis.Redis) -> None:
    shape = replace(SHAPE, provider_capacity=100, provider_quota=5)
    quota = redis_keys.provider_quota("birdy")
    outcomes = []
    for fan_out in (2, 2, 2, 1):
        (reply,) = await _run(client, "check_provider", *provider_check_call("birdy", shape=shape, fan_outs=[fan_out]))
        outcomes.append(int(reply[0]))
    one_each = await client.hgetall(quota)
    await client.delete(quota, BREAKER, redis_keys.rate_limit("birdy", "provider_send"))
    replies = await _run(client, "check_provider", *provider_check_call("birdy", shape=shape, fan_outs=[2, 2, 2, 1]))
    assert [int(reply[0]) for reply in replies] == outcomes == [0, 0, 2, 0]
    assert await client.hgetall(quota) == one_each
    assert await client.hget(BREAKER, "failures") == b"1"
