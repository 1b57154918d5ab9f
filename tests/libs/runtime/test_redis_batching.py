"""Shared pipelines on a real Redis (and a real Redis Cluster): concurrent callers' commands go out together, and
each caller still gets its own reply or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from parley_runtime.redis_batching import CommandBatcher
from parley_runtime.redis_client import Redis, connect, load_script
from parley_runtime.telemetry import Telemetry
from parley_runtime.testing import RedisClusterServers, free_port


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = connect(redis_url)
    yield redis
    await redis.aclose()


async def test_commands_issued_together_share_one_pipeline(client: Redis) -> None:
    batcher = CommandBatcher(client)
    replies = await asyncio.gather(*(batcher.execute_command("INCRBY", f"n:{{{i}}}", i) for i in range(20)))
    assert replies == list(range(20))
    assert batcher.batches == 1


async def test_commands_issued_while_a_pipeline_is_in_flight_go_out_together_after_it(client: Redis) -> None:
    batcher = CommandBatcher(client)
    first = asyncio.gather(*(batcher.execute_command("INCR", "wave") for _ in range(5)))
    await asyncio.sleep(0)  # the first pipeline is on its way
    second = asyncio.gather(*(batcher.execute_command("INCR", "wave") for _ in range(5)))
    assert sorted([*await first, *await second]) == list(range(1, 11))
    assert batcher.batches == 2


async def test_a_failing_command_fails_only_its_caller(client: Redis) -> None:
    await client.rpush("a-list", "x")
    batcher = CommandBatcher(client)
    replies = await asyncio.gather(
        batcher.execute_command("INCR", "counter"),
        batcher.execute_command("INCR", "a-list"),
        batcher.execute_command("INCR", "counter"),
        return_exceptions=True,
    )
    assert replies[0] == 1
    assert isinstance(replies[1], ResponseError)
    assert "WRONGTYPE" in str(replies[1])
    assert replies[2] == 2
    assert batcher.batches == 1


async def test_replies_are_parsed_as_the_client_parses_them(client: Redis) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.execute_command("SET", "k", "v1", "NX", "GET", get=True) is None
    assert await batcher.execute_command("SET", "k", "v2", "GET", get=True) == b"v1"
    assert await batcher.execute_command("SET", "other", "v") is True


async def test_scripts_are_loaded_again_after_redis_forgot_them(client: Redis) -> None:
    script = load_script(client, "parley_runtime", "token_bucket")
    batcher = CommandBatcher(client)
    assert await batcher.run_script(script, ["rl:{ann}:t"], [2, 0.001, 1]) == [1, 0]
    await client.script_flush()
    replies = await asyncio.gather(*(batcher.run_script(script, ["rl:{ann}:t"], [2, 0.001, 1]) for _ in range(2)))
    assert sorted(reply[0] for reply in replies) == [0, 1]  # one token was left: each call ran exactly once


async def test_an_unreachable_redis_fails_every_caller() -> None:
    unreachable = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    batcher = CommandBatcher(unreachable)
    replies = await asyncio.gather(*(batcher.execute_command("GET", f"k{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(reply, RedisError) for reply in replies)
    # The batcher recovers once Redis answers again: nothing is left queued or in flight.
    assert not batcher._queue
    assert not batcher._sending
    await unreachable.aclose()


async def test_a_sampled_callers_trace_gets_the_pipeline_span(
    client: Redis, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    batcher = CommandBatcher(client)
    tracer = telemetry.tracer("test")
    with tracer.start_as_current_span("call") as call:
        await batcher.execute_command("SET", "traced", "1")
    pipeline = [s for s in spans.get_finished_spans() if (s.attributes or {}).get("db.system") == "redis"]
    assert len(pipeline) == 1
    assert pipeline[0].parent is not None
    assert pipeline[0].parent.span_id == call.get_span_context().span_id


async def test_a_batch_spans_the_masters_of_a_cluster(redis_cluster_servers: RedisClusterServers) -> None:
    redis_cluster_servers.flush()
    cluster = connect(redis_cluster_servers.url, cluster=True)
    script = load_script(cluster, "parley_runtime", "token_bucket")
    batcher = CommandBatcher(cluster)
    users = [f"username:u{i}@birdy" for i in range(30)]
    await cluster.initialize()
    owners = {cluster.nodes_manager.get_node_from_slot(key_slot(user.encode())).name for user in users}
    assert len(owners) == 3
    taken = await asyncio.gather(*(batcher.run_script(script, [f"rl:{{{user}}}:t"], [1, 0.001, 1]) for user in users))
    assert [reply[0] for reply in taken] == [1] * len(users)
    await cluster.script_flush()
    again = await asyncio.gather(*(batcher.run_script(script, [f"rl:{{{user}}}:t"], [1, 0.001, 1]) for user in users))
    assert [reply[0] for reply in again] == [0] * len(users)  # each bucket gave its one token once
    assert await asyncio.gather(*(batcher.execute_command("GET", f"none:{{{user}}}") for user in users)) == [
        None
    ] * len(users)
    await cluster.aclose()
