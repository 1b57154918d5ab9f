"""The mailbox store on a real Redis: unary sends storing at the same moment share one pipeline (``store_shared``),
and each still gets exactly its own outcome."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from parley_relay.store import RedisMailboxStore, StoreRequest, StoreResult
from parley_runtime import redis_keys
from parley_runtime.redis_client import connect
from parley_runtime.testing import free_port

RETENTION_MS = 60_000
NOW_MS = int(time.time() * 1000)


def _request(
    user: str, devices: tuple[int, ...], message_id: str, sender: str = "username:ben@birdy/1"
) -> StoreRequest:
    return StoreRequest(
        user=user,
        device_ids=devices,
        stanza=f"<m id='{message_id}'/>".encode(),
        ts=NOW_MS,
        message_id=message_id,
        sender=sender,
        receipt_requested=False,
        retention_ms=RETENTION_MS,
    )


class _Pipelines:
    """Counts the pipelines a client executes, with the commands in each."""

    def __init__(self, client: Any) -> None:
        self.sizes: list[int] = []
        real_pipeline = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute

            async def execute(*e_args: Any, **e_kwargs: Any) -> Any:
                self.sizes.append(len(pipe.command_stack))
                return await real_execute(*e_args, **e_kwargs)

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline


async def _publishes(client: aioredis.Redis) -> int:
    stats: dict[str, Any] = await client.info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


async def _lengths(client: aioredis.Redis, user: str, devices: tuple[int, ...]) -> list[int]:
    return [await client.xlen(redis_keys.mailbox(user, device)) for device in devices]


async def _shared_wave(store: RedisMailboxStore, callers: list[list[StoreRequest]]) -> list[Any]:
    """Stores a first caller alone, and ``callers`` while it is in flight (so they go together in the next wave)."""
    first = asyncio.create_task(store.store_shared([_request("username:zoe@birdy", (1,), "first")]))
    await asyncio.sleep(0)
    outcomes = await asyncio.gather(*(store.store_shared(c) for c in callers), return_exceptions=True)
    await first
    return outcomes


async def test_concurrent_callers_share_one_pipeline_each_with_its_own_results(redis_url: str) -> None:
    client = connect(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    pipelines = _Pipelines(client)
    store = RedisMailboxStore(client)
    ana, cleo = "username:ana@gatekeeper", "username:cleo@birdy"
    callers = [[_request(ana, (1, 2), f"a{n}")] for n in range(8)]
    callers += [[_request(cleo, (1,), "c0"), _request(cleo, (1,), "c1")]]  # one caller, two stanzas, in order
    callers += [[_request(ana, (1, 2), "a0")]]  # the same stanza as the first caller's, at the same moment
    await store.store_many([_request("username:zoe@birdy", (1,), "loads the script")])
    pipelines.sizes.clear()
    publishes = await _publishes(admin)

    outcomes = await _shared_wave(store, callers)

    assert not any(isinstance(outcome, BaseException) for outcome in outcomes)
    # One pipeline for the lone first caller, one for everyone who came while it was in flight.
    assert len(pipelines.sizes) == 2
    for outcome in outcomes[:8]:
        assert len(outcome) == 1
        assert not outcome[0].duplicate
        assert len(outcome[0].delivery_ids) == 2
    assert [len(result.delivery_ids) for result in outcomes[8]] == [1, 1]
    assert outcomes[8][0].delivery_ids[0] < outcomes[8][1].delivery_ids[0]
    assert outcomes[9] == [StoreResult(duplicate=True, ts=NOW_MS)]
    # Every stanza stored once, and one hint per mailbox (not one per stanza) for the shared pipeline.
    assert await _lengths(admin, ana, (1, 2)) == [8, 8]
    assert await _lengths(admin, cleo, (1,)) == [2]
    assert await _publishes(admin) - publishes == 1 + 3
    entries = await admin.xrange(redis_keys.mailbox(ana, 1))
    assert sorted(fields[b"m"] for _, fields in entries) == sorted(f"a{n}".encode() for n in range(8))
    await client.aclose()
    await admin.aclose()


async def test_a_caller_whose_script_fails_fails_alone_and_the_others_are_stored(redis_url: str) -> None:
    client = connect(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    store = RedisMailboxStore(client)
    ana, cleo = "username:ana@gatekeeper", "username:cleo@birdy"
    # Cleo's tablet mailbox is not a stream: the script refuses before writing anything for that stanza.
    await admin.set(redis_keys.mailbox(cleo, 2), b"not a stream")
    callers = [[_request(ana, (1,), "a0")], [_request(cleo, (1, 2), "c0")], [_request(ana, (1,), "a1")]]

    outcomes = await _shared_wave(store, callers)

    assert isinstance(outcomes[1], ResponseError)
    assert "WRONGTYPE" in str(outcomes[1])
    assert [len(outcome) for outcome in (outcomes[0], outcomes[2])] == [1, 1]
    assert await _lengths(admin, ana, (1,)) == [2]
    # Nothing of the failed stanza anywhere, and no acceptance marker: a retry stores it afresh.
    assert await admin.xlen(redis_keys.mailbox(cleo, 1)) == 0
    assert not await admin.exists(redis_keys.accepted(cleo, "username:ben@birdy/1", "c0"))
    await admin.delete(redis_keys.mailbox(cleo, 2))
    (retried,) = await store.store_shared([_request(cleo, (1, 2), "c0")])
    assert not retried.duplicate
    assert len(retried.delivery_ids) == 2
    await client.aclose()
    await admin.aclose()


async def test_after_a_script_flush_every_caller_of_a_shared_pipeline_is_stored_once(redis_url: str) -> None:
    client = connect(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    store = RedisMailboxStore(client)
    ana = "username:ana@gatekeeper"
    await store.store_shared([_request(ana, (1,), "before")])
    await admin.script_flush()
    callers = [[_request(ana, (1,), f"m{n}")] for n in range(6)]

    outcomes = await _shared_wave(store, callers)

    assert all(len(outcome) == 1 and not outcome[0].duplicate for outcome in outcomes)
    assert await admin.xlen(redis_keys.mailbox(ana, 1)) == 1 + 6
    await client.aclose()
    await admin.aclose()


async def test_a_lost_redis_fails_every_caller_of_the_wave() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    store = RedisMailboxStore(client)
    outcomes = await asyncio.gather(
        *(store.store_shared([_request("username:ana@gatekeeper", (1,), f"m{n}")]) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    with pytest.raises(RedisConnectionError):
        await store.store_many([_request("username:ana@gatekeeper", (1,), "alone")])
    await client.aclose()
