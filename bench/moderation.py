"""Send decisions per second through the moderation service, one per call and batched, beside the floor of its
Redis pipeline.

Ours (``check_send``): ``CheckSend`` over real gRPC with the internal token, as the relay calls it, through the
real moderation process (fed providers by a real identity process) and a real Redis: the kill-switch check,
address parsing, the pipelined sender/recipient/provider scripts (one round trip) and the verdict. Floor: the
very same pipeline of the three scripts (same keys, same arguments) called straight through redis-py from this
process at the same concurrency. Both sides rotate through the same senders and recipients, with limits far
above the offered load, so every decision is an ALLOW and takes tokens like production's common case: a message
in a conversation (each recipient writes to its sender once before measuring, so no send is a first contact and
none needs the provider's first-contact stage). For
scale, ``extra`` also gives the rate of the gRPC health check on the same server at the same concurrency: what a
call costs in this process before any moderation work; and CPU per decision of each process, and where
moderation's CPU goes (a py-spy profile of one more round, by layer). The services run with telemetry off.

Ours (``check_send_production_telemetry``): the same calls to a second moderation process with production
telemetry (bench/benchtelemetry.py), beside the first one's rate in the same rounds (target: at most 10 % less).

Ours (``check_send_batch``): the same decisions through ``CheckSendBatch``, ``BATCH`` per call (the relay's
SendBatch frame), ``BATCH_CONCURRENCY`` calls at once; one pipeline of 3 x ``BATCH`` scripts per call. Its floor
is the same per-decision floor as above, so the ratio says what batching buys over the best a caller deciding
one send per round trip could get; ``extra`` adds the floor of the batched pipeline itself (``BATCH`` decisions'
scripts in one redis-py pipeline, same concurrency), the Redis work alone for the batched path, and CPU per
decision of moderation and Redis with a py-spy profile of moderation by layer, as the relay pays them.

Writes bench/results/moderation.json.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio
import redis.asyncio as aioredis
from benchlib import CpuMeter, Figure, parse_args, profile_layers, write_results
from benchtelemetry import TELEMETRY_OFF, OtlpSink, production_telemetry
from benchworld import CREDENTIALS, enlist, service_env
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.identity.v1 import identity_pb2_grpc
from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_moderation.model import SendShape
from parley_moderation.store import check_send_calls, provider_check_call, user_check_calls
from parley_runtime.redis_client import load_script
from parley_runtime.testing import RedisServer, ServiceProcess

# The bench asks for send decisions as the relay does, with the relay's credential.
INTERNAL = (("authorization", f"Bearer {CREDENTIALS['relay']}"),)
CONCURRENCY = 32
BATCH = 50
BATCH_CONCURRENCY = 8
USERS = 500
UNLIMITED = 100_000_000
LIMITS = ("SEND", "FIRST_CONTACT", "PROVIDER", "PROVIDER_FIRST_CONTACT")
SENDERS = [f"username:user{i}@birdy" for i in range(USERS)]
RECIPIENTS = [f"username:user{i}@gatekeeper" for i in range(USERS)]
# The service's shape with the bench's settings below (contacts as the defaults): the floor sends exactly this.
SHAPE = SendShape(
    sender_capacity=float(UNLIMITED),
    sender_per_second=UNLIMITED / 10,
    first_contact_capacity=float(UNLIMITED),
    first_contact_per_second=UNLIMITED / 10,
    provider_capacity=float(UNLIMITED),
    provider_per_second=UNLIMITED / 10,
    provider_first_contact_capacity=float(UNLIMITED),
    provider_first_contact_per_second=UNLIMITED / 10,
    provider_quota=0,
    quota_window_ms=86_400_000,
    breaker_threshold=1000,
    breaker_window_ms=10_000,
    breaker_cooldown_ms=30_000,
    max_contacts=10_000,
    contact_ttl_ms=90 * 86_400_000,
)


async def _run_for(
    seconds: float, call: Callable[[int], Awaitable[None]], concurrency: int = CONCURRENCY
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        turn = offset
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call(turn)
            latencies.append(time.perf_counter() - start)
            turn += concurrency

    await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    return len(latencies), latencies


async def main() -> None:
    args = parse_args(__doc__ or "")
    seconds = 3.0 if args.quick else 10.0
    rounds = 2 if args.quick else 3
    with RedisServer() as redis_server:
        env = service_env(redis_server.url)
        identity_process = ServiceProcess("parley_identity", {**env, **TELEMETRY_OFF}, credentials=CREDENTIALS)
        identity_process.start()
        identity_channel = grpc.aio.insecure_channel(identity_process.target)
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        for provider_id in ("gatekeeper", "birdy"):
            await enlist(identity, provider_id)
        await identity_channel.close()
        moderation_env = {
            **env,
            "PARLEY_IDENTITY_TARGET": identity_process.target,
            "PARLEY_FRANKING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            **{f"PARLEY_{name}_BURST": str(UNLIMITED) for name in LIMITS},
            **{f"PARLEY_{name}_PER_SECOND": str(UNLIMITED // 10) for name in LIMITS},
            "PARLEY_MAX_INFLIGHT_CALLS": "100000",
        }
        async with OtlpSink() as sink:
            moderation_process = ServiceProcess(
                "parley_moderation", {**moderation_env, **TELEMETRY_OFF}, credentials=CREDENTIALS
            )
            moderation_process.start()
            traced_process = ServiceProcess(
                "parley_moderation", {**moderation_env, **production_telemetry(sink.port)}, credentials=CREDENTIALS
            )
            traced_process.start()
            try:
                figures = await _measure(redis_server, moderation_process, traced_process, sink, seconds, rounds)
            finally:
                traced_process.stop()
                moderation_process.stop()
                identity_process.stop()
    write_results("moderation", figures, quick=args.quick, out=args.out)


def _percentile_ms(sorted_latencies: list[float], fraction: float) -> float:
    return round(sorted_latencies[int(len(sorted_latencies) * fraction)] * 1000, 3)


async def _measure(  # noqa: PLR0915 -- one scenario, its arms side by side
    redis_server: RedisServer,
    moderation_process: ServiceProcess,
    traced_process: ServiceProcess,
    sink: OtlpSink,
    seconds: float,
    rounds: int,
) -> dict[str, Figure]:
    channel = grpc.aio.insecure_channel(moderation_process.target)
    moderation = moderation_pb2_grpc.ModerationServiceStub(channel)
    traced_channel = grpc.aio.insecure_channel(traced_process.target)
    traced = moderation_pb2_grpc.ModerationServiceStub(traced_channel)
    requests = [
        pb.CheckSendRequest(sender=f"{sender}/1", recipient=recipient, fan_out=2)
        for sender, recipient in zip(SENDERS, RECIPIENTS, strict=True)
    ]

    replies = [
        pb.CheckSendRequest(sender=f"{recipient}/1", recipient=sender, fan_out=1)
        for sender, recipient in zip(SENDERS, RECIPIENTS, strict=True)
    ]
    for start in range(0, USERS, BATCH):
        await moderation.CheckSendBatch(
            pb.CheckSendBatchRequest(checks=replies[start : start + BATCH]), metadata=INTERNAL
        )

    async def ours(turn: int) -> None:
        response = await moderation.CheckSend(requests[turn % USERS], metadata=INTERNAL)
        assert response.verdict == pb.VERDICT_ALLOW, response

    async def ours_traced(turn: int) -> None:
        response = await traced.CheckSend(requests[turn % USERS], metadata=INTERNAL)
        assert response.verdict == pb.VERDICT_ALLOW, response

    batches = [pb.CheckSendBatchRequest(checks=requests[start : start + BATCH]) for start in range(0, USERS, BATCH)]

    async def ours_batch(turn: int) -> None:
        response = await moderation.CheckSendBatch(batches[turn % len(batches)], metadata=INTERNAL)
        assert [decision.verdict for decision in response.decisions] == [pb.VERDICT_ALLOW] * BATCH, response

    client = aioredis.Redis.from_url(redis_server.url, max_connections=CONCURRENCY * 2)
    scripts = [
        load_script(client, "parley_moderation", name) for name in ("check_sender", "check_recipient", "check_provider")
    ]
    for script in scripts:
        await client.script_load(script.script)

    async def floor(turn: int) -> None:
        index = turn % USERS
        calls = check_send_calls(
            SENDERS[index], RECIPIENTS[index], "birdy", fan_out=2, shape=SHAPE, now_ms=int(time.time() * 1000)
        )
        async with client.pipeline(transaction=False) as pipe:
            for script, (keys, script_args) in zip(scripts, calls, strict=True):
                pipe.evalsha(script.sha, len(keys), *keys, *script_args)
            results: list[Any] = await pipe.execute()
        assert [int(reply[0][0]) for reply in results] == [0, 0, 0], results

    async def floor_batch(turn: int) -> None:
        start = (turn % (USERS // BATCH)) * BATCH
        now_ms = int(time.time() * 1000)
        # As the service sends a batch: one provider script for all its sends, then each send's user scripts.
        async with client.pipeline(transaction=False) as pipe:
            keys, script_args = provider_check_call("birdy", shape=SHAPE, fan_outs=[2] * BATCH)
            pipe.evalsha(scripts[2].sha, len(keys), *keys, *script_args)
            for index in range(start, start + BATCH):
                calls = user_check_calls(SENDERS[index], RECIPIENTS[index], shape=SHAPE, now_ms=now_ms)
                for script, (keys, script_args) in zip(scripts, calls, strict=False):
                    pipe.evalsha(script.sha, len(keys), *keys, *script_args)
            results: list[Any] = await pipe.execute()
        assert all(int(reply[0]) == 0 for reply in results[0]), results[0]
        assert all(int(result[0][0]) == 0 for result in results[1:]), results

    health = health_pb2_grpc.HealthStub(channel)

    async def health_check(turn: int) -> None:
        await health.Check(health_pb2.HealthCheckRequest())

    # name: (call, concurrency, decisions per call); every round runs each in turn, so drift hits all alike.
    runs: dict[str, tuple[Callable[[int], Awaitable[None]], int, int]] = {
        "ours": (ours, CONCURRENCY, 1),
        "traced": (ours_traced, CONCURRENCY, 1),
        "floor": (floor, CONCURRENCY, 1),
        "health": (health_check, CONCURRENCY, 1),
        "ours_batch": (ours_batch, BATCH_CONCURRENCY, BATCH),
        "floor_batch": (floor_batch, BATCH_CONCURRENCY, BATCH),
    }
    for call, concurrency, _ in runs.values():
        await _run_for(0.5, call, concurrency)  # warm-up: connections, script cache, address cache
    rates: dict[str, list[float]] = {name: [] for name in runs}
    latencies: dict[str, list[float]] = {name: [] for name in runs}
    assert moderation_process.process is not None
    assert traced_process.process is not None
    pid = moderation_process.process.pid
    meters = {
        "ours": CpuMeter({"moderation": pid, "redis": redis_server.pid, "client": os.getpid()}),
        "traced": CpuMeter({"moderation": traced_process.process.pid}),
        "floor": CpuMeter({"redis": redis_server.pid, "client": os.getpid()}),
        "ours_batch": CpuMeter({"moderation": pid, "redis": redis_server.pid}),
        "floor_batch": CpuMeter({"redis": redis_server.pid}),
    }
    counts = dict.fromkeys(runs, 0)
    spans_before = sink.spans
    for _ in range(rounds):
        for name, (call, concurrency, per_call) in runs.items():
            meter = meters.get(name)
            if meter:
                meter.start()
            count, lat = await _run_for(seconds, call, concurrency)
            if meter:
                meter.stop()
            rates[name].append(count * per_call / seconds)
            latencies[name] += lat
            counts[name] += count
    profile_task = asyncio.create_task(asyncio.to_thread(profile_layers, pid, seconds - 1))
    await _run_for(seconds, ours)
    profile = await profile_task
    batch_profile_task = asyncio.create_task(asyncio.to_thread(profile_layers, pid, seconds - 1))
    await _run_for(seconds, ours_batch, BATCH_CONCURRENCY)
    batch_profile = await batch_profile_task
    await client.aclose()
    await channel.close()
    await traced_channel.close()
    rate = {name: statistics.median(values) for name, values in rates.items()}
    for values in latencies.values():
        values.sort()
    return {
        "check_send": Figure(
            unit="CheckSend decisions/s",
            ours=rate["ours"],
            floor=rate["floor"],
            target=0.4,
            extra={
                "concurrency": CONCURRENCY,
                "users": USERS,
                "p50_ms": _percentile_ms(latencies["ours"], 0.5),
                "p99_ms": _percentile_ms(latencies["ours"], 0.99),
                "floor_desc": "the same 3-script pipeline via redis-py, same keys and concurrency, in the client",
                "health_checks_per_s": round(rate["health"], 1),
                "cpu_us_per_decision": meters["ours"].per_unit_us(counts["ours"]),
                "floor_cpu_us_per_decision": meters["floor"].per_unit_us(counts["floor"]),
                "moderation_cpu_profile": profile,
            },
        ),
        "check_send_production_telemetry": Figure(
            unit="CheckSend decisions/s",
            ours=rate["traced"],
            floor=rate["ours"],
            target=0.9,
            extra={
                "moderation_cpu_us_per_decision": meters["traced"].per_unit_us(counts["traced"])["moderation_cpu_us"],
                "moderation_cpu_us_per_decision_without": meters["ours"].per_unit_us(counts["ours"])[
                    "moderation_cpu_us"
                ],
                "spans_exported": sink.spans - spans_before,
                "metric_exports": sink.metric_exports,
                "floor_desc": "the same CheckSend calls to a second moderation process with telemetry off",
                "ours_desc": "traces sampled parent-based at 1 %, traces and metrics exported over OTLP",
            },
        ),
        "check_send_batch": Figure(
            unit="CheckSendBatch decisions/s",
            ours=rate["ours_batch"],
            floor=rate["floor"],
            extra={
                "checks_per_call": BATCH,
                "concurrency": BATCH_CONCURRENCY,
                "users": USERS,
                "call_p50_ms": _percentile_ms(latencies["ours_batch"], 0.5),
                "call_p99_ms": _percentile_ms(latencies["ours_batch"], 0.99),
                "floor_desc": "check_send's floor: one 3-script pipeline per decision via redis-py, concurrency 32",
                "batched_pipeline_floor_per_s": round(rate["floor_batch"], 1),
                "batched_pipeline_floor_desc": f"{BATCH} decisions' scripts per redis-py pipeline, same concurrency",
                "cpu_us_per_decision": meters["ours_batch"].per_unit_us(counts["ours_batch"] * BATCH),
                "batched_pipeline_floor_cpu_us_per_decision": meters["floor_batch"].per_unit_us(
                    counts["floor_batch"] * BATCH
                ),
                "moderation_cpu_profile": batch_profile,
            },
        ),
    }


if __name__ == "__main__":
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    asyncio.run(main())
