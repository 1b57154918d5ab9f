"""Bundle fetches per second through the key directory, beside the floor of the same Lua claim via redis-py.

Ours: ``FetchPreKeyBundles`` for one device over real gRPC, with a fresh one-time assertion per call, through the
real key-directory and identity services (separate processes, telemetry off) and a real Redis. Floor: the very same
``claim_bundles.lua`` script called straight through redis-py from this process, at the same concurrency. Both
claim real one-time prekeys from long lists, so neither side measures the cheaper exhausted path. Extras: CPU per
fetch of each process, Redis round trips and commands per fetch, and where the key directory's CPU goes (a py-spy
profile of one more round, by layer), and the rate and CPU of gRPC health checks on the same server at the same
concurrency: what a call that does nothing reaches beside the same floor.

Ours (``bundle_fetch_session``): the same fetches authenticated by a provider session (identity's
``CreateSession``, one assertion, then an HMAC token and the acting user and device in metadata on every call):
no Ed25519 verification and no replay-guard round trip per call. Its floor is the same as ``bundle_fetch``'s.

Ours (``bundle_fetch_production_telemetry``): the same fetches through a second key-directory process with
production telemetry (bench/benchtelemetry.py), beside the first one's rate in the same rounds: the ratio is what
telemetry leaves of the throughput (target: at most 10 % overhead).

Writes bench/results/keydir.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio
import redis.asyncio as aioredis
from benchlib import CpuMeter, Figure, parse_args, profile_layers, write_results
from benchtelemetry import TELEMETRY_OFF, OtlpSink, production_telemetry
from benchworld import CREDENTIALS, Assertions, auth, enlist, service_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley.keydir.v1 import keydir_pb2_grpc
from parley_crypto import IdentityKeyPair, generate_prekeys, generate_signed_prekey
from parley_runtime import redis_keys
from parley_runtime.auth import DEVICE_METADATA, USER_METADATA
from parley_runtime.redis_client import load_script
from parley_runtime.testing import RedisServer, ServiceProcess

BOB = "username:bob@gatekeeper"
ALICE = "username:alice@birdy"
CONCURRENCY = 32


async def _fill(client: aioredis.Redis, address: str, device: int, count: int, start_id: int) -> None:
    """Appends ``count`` one-time prekeys straight into Redis (the fetch path does not re-check keys)."""
    template = generate_prekeys(1, 1)[0].key_pair.public_key.serialize()
    key = redis_keys.device_one_time_prekeys(address, device)
    for offset in range(0, count, 5000):
        batch = [(start_id + i).to_bytes(4, "big") + template for i in range(offset, min(count, offset + 5000))]
        await client.rpush(key, *batch)


async def _run_for(seconds: float, call: object) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call()  # type: ignore[operator]
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(latencies), latencies


async def main() -> None:
    args = parse_args(__doc__ or "")
    seconds = 3.0 if args.quick else 10.0
    rounds = 2 if args.quick else 3
    with RedisServer() as redis_server:
        env = service_env(redis_server.url)
        identity_process = ServiceProcess("parley_identity", {**env, **TELEMETRY_OFF}, credentials=CREDENTIALS)
        identity_process.start()
        keydir_env = {
            **env,
            "PARLEY_IDENTITY_TARGET": identity_process.target,
            "PARLEY_FETCH_BURST": "10000000",
            "PARLEY_FETCH_PER_SECOND": "10000000",
            "PARLEY_PROVIDER_FETCH_BURST": "10000000",
            "PARLEY_PROVIDER_FETCH_PER_SECOND": "10000000",
            # One requester fetches one device in a loop: the drain guard would rightly withhold its keys.
            "PARLEY_DRAIN_GUARD_CLAIMS": "1000000",
            "PARLEY_MAX_INFLIGHT_CALLS": "100000",
        }
        async with OtlpSink() as sink:
            keydir_process = ServiceProcess("parley_keydir", {**keydir_env, **TELEMETRY_OFF}, credentials=CREDENTIALS)
            keydir_process.start()
            traced_process = ServiceProcess(
                "parley_keydir", {**keydir_env, **production_telemetry(sink.port)}, credentials=CREDENTIALS
            )
            traced_process.start()
            try:
                figures = await _measure(
                    redis_server, identity_process, keydir_process, traced_process, sink, seconds, rounds
                )
            finally:
                traced_process.stop()
                keydir_process.stop()
                identity_process.stop()
    write_results("keydir", figures, quick=args.quick, out=args.out)


class RedisTraffic:
    """Round trips (reads Redis processed: a pipeline arriving whole is one) and commands Redis ran (a script's
    inner calls included) over a stretch of the bench, from ``INFO`` on the bench's Redis; other processes' idle
    traffic (event followers, readiness checks) is counted too, a few a second."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self.reads = 0
        self.commands = 0
        self._started = (0, 0)

    async def _read(self) -> tuple[int, int]:
        stats: dict[str, Any] = await self._client.info("stats")
        return int(stats["total_reads_processed"]), int(stats["total_commands_processed"])

    async def start(self) -> None:
        """Begins a stretch."""
        self._started = await self._read()

    async def stop(self) -> None:
        """Ends a stretch (its own INFO call not counted)."""
        reads, commands = await self._read()
        self.reads += reads - self._started[0] - 1
        self.commands += commands - self._started[1] - 1

    def per_fetch(self, fetches: int) -> dict[str, float]:
        """Round trips and commands per fetch."""
        return {
            "redis_round_trips_per_fetch": round(self.reads / max(fetches, 1), 3),
            "redis_commands_per_fetch": round(self.commands / max(fetches, 1), 2),
        }


async def _metered_run(
    seconds: float, call: Callable[[], Awaitable[None]], meter: CpuMeter, traffic: RedisTraffic
) -> tuple[int, list[float]]:
    """:func:`_run_for` with the processes' CPU and the Redis traffic measured over it."""
    await traffic.start()
    meter.start()
    result = await _run_for(seconds, call)
    meter.stop()
    await traffic.stop()
    return result


def _pid(process: ServiceProcess) -> int:
    assert process.process is not None
    return process.process.pid


async def _world(
    identity: identity_pb2_grpc.IdentityServiceStub,
    keydir: keydir_pb2_grpc.KeyDirectoryServiceStub,
    client: aioredis.Redis,
    seconds: float,
    rounds: int,
) -> Ed25519PrivateKey:
    """Bob of the gatekeeper with a published device and long lists of prekeys, Alice of birdy allowed to fetch
    them; returns birdy's signing key."""
    gatekeeper = await enlist(identity, "gatekeeper")
    birdy = await enlist(identity, "birdy")
    for key, provider, user, allow in ((gatekeeper, "gatekeeper", BOB, "birdy"), (birdy, "birdy", ALICE, "gatekeeper")):
        await identity.RegisterUser(id_pb.RegisterUserRequest(), metadata=auth(key, provider, user))
        await identity.RegisterDevice(
            id_pb.RegisterDeviceRequest(registration_id=7), metadata=auth(key, provider, user)
        )
        await identity.EnableThirdPartyChats(
            id_pb.EnableThirdPartyChatsRequest(allowed_providers=[allow]), metadata=auth(key, provider, user)
        )
    bob_identity = IdentityKeyPair.generate()
    signed = generate_signed_prekey(bob_identity, 1, timestamp=0)
    await keydir.PublishKeys(
        kd_pb.PublishKeysRequest(
            registration_id=7,
            identity_key=bob_identity.public_key.serialize(),
            signed_prekey=kd_pb.SignedPreKey(
                key_id=1, public_key=signed.key_pair.public_key.serialize(), signature=signed.signature
            ),
        ),
        metadata=auth(gatekeeper, "gatekeeper", BOB, 1),
    )
    # Enough prekeys that no round runs dry: the services' side on device 1, the floor on a twin device 2 record.
    budget = int(seconds * (rounds + 1) * 20_000)
    await _fill(client, BOB, 1, budget // 2, 1)
    record: dict[Any, Any] = await client.hgetall(redis_keys.device_keys(BOB, 1))
    await client.hset(redis_keys.device_keys(BOB, 2), mapping=record)
    await _fill(client, BOB, 2, budget, 1)
    return birdy


async def _world_and_session(
    identity: identity_pb2_grpc.IdentityServiceStub,
    keydir: keydir_pb2_grpc.KeyDirectoryServiceStub,
    client: aioredis.Redis,
    seconds: float,
    rounds: int,
) -> tuple[Ed25519PrivateKey, Callable[[], Awaitable[None]]]:
    """The bench's world (birdy's signing key), and a fetch authenticated by one provider session (made here with
    one assertion) instead of an assertion per call."""
    birdy = await _world(identity, keydir, client, seconds, rounds)
    request = kd_pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1")
    session = await identity.CreateSession(id_pb.CreateSessionRequest(), metadata=auth(birdy, "birdy", "birdy"))
    metadata = (("authorization", f"Bearer {session.session_token}"), (USER_METADATA, ALICE), (DEVICE_METADATA, "1"))

    async def call() -> None:
        response = await keydir.FetchPreKeyBundles(request, metadata=metadata)
        assert not response.bundles[0].one_time_prekey_exhausted

    return birdy, call


def _health_checks(channel: grpc.aio.Channel) -> Callable[[], Awaitable[None]]:
    """gRPC health checks on ``channel``'s server: a call that does nothing."""
    health = health_pb2_grpc.HealthStub(channel)

    async def check() -> None:
        await health.Check(health_pb2.HealthCheckRequest())

    return check


async def _measure(
    redis_server: RedisServer,
    identity_process: ServiceProcess,
    keydir_process: ServiceProcess,
    traced_process: ServiceProcess,
    sink: OtlpSink,
    seconds: float,
    rounds: int,
) -> dict[str, Figure]:
    identity_channel = grpc.aio.insecure_channel(identity_process.target)
    keydir_channel = grpc.aio.insecure_channel(keydir_process.target)
    traced_channel = grpc.aio.insecure_channel(traced_process.target)
    keydir = keydir_pb2_grpc.KeyDirectoryServiceStub(keydir_channel)
    traced = keydir_pb2_grpc.KeyDirectoryServiceStub(traced_channel)
    client = aioredis.Redis.from_url(redis_server.url)
    identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
    birdy, ours_session = await _world_and_session(identity, keydir, client, seconds, rounds)
    request = kd_pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1")
    assertions = Assertions(birdy, "birdy", ALICE, 1)

    def fetch(stub: keydir_pb2_grpc.KeyDirectoryServiceStub) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            response = await stub.FetchPreKeyBundles(request, metadata=assertions.next())
            assert not response.bundles[0].one_time_prekey_exhausted

        return call

    ours, ours_traced = fetch(keydir), fetch(traced)
    script = load_script(client, "parley_keydir", "claim_bundles")
    floor_keys = [
        redis_keys.user_key_requesters(BOB),
        redis_keys.device_keys(BOB, 2),
        redis_keys.device_one_time_prekeys(BOB, 2),
        redis_keys.device_one_time_pq_prekeys(BOB, 2),
        redis_keys.device_claims(BOB, 2),
    ]

    async def floor() -> None:
        now_ms = int(time.time() * 1000)
        result = await script(keys=floor_keys, args=[ALICE, now_ms, 1000, 86_400_000, 1_000_000, 3_600_000])
        assert result[10]  # the claimed one-time prekey (claim_bundles.lua's header lists the fields)

    pids = {"keydir": _pid(keydir_process), "identity": _pid(identity_process), "redis": redis_server.pid}
    ours_cpu = CpuMeter({**pids, "client": os.getpid()})
    traced_cpu, health_cpu = CpuMeter({"keydir": _pid(traced_process)}), CpuMeter({"keydir": pids["keydir"]})
    floor_cpu = CpuMeter({"redis": redis_server.pid, "client": os.getpid()})
    session_cpu = CpuMeter({**pids, "client": os.getpid()})
    traffic = {name: RedisTraffic(client) for name in ("ours", "floor", "traced", "session", "health")}
    assertions.mint(int(seconds * 3000))
    for call in (ours, ours_traced, ours_session, floor):
        await _run_for(0.5, call)  # warm-up: connections, script cache, identity's answers cached
    rates: dict[str, list[float]] = {"ours": [], "traced": [], "session": [], "floor": [], "health": []}
    counts = dict.fromkeys(rates, 0)
    latencies: list[float] = []
    spans_before = sink.spans
    for _ in range(rounds):
        for name, call, meter in (
            ("ours", ours, ours_cpu),
            ("floor", floor, floor_cpu),
            ("traced", ours_traced, traced_cpu),
            ("session", ours_session, session_cpu),
            ("health", _health_checks(keydir_channel), health_cpu),
        ):
            # Assertions are minted before the round, as a provider's backend does on its own machines: the
            # minting is not the gatekeeper's work and must not compete with it for this machine's CPU.
            assertions.mint(int(seconds * 3000))
            count, lat = await _metered_run(seconds, call, meter, traffic[name])
            rates[name].append(count / seconds)
            counts[name] += count
            if name == "ours":
                latencies += lat
    assertions.mint(int(seconds * 3000))
    profile_task = asyncio.create_task(asyncio.to_thread(profile_layers, pids["keydir"], seconds - 1))
    await _run_for(seconds, ours)
    profile = await profile_task
    await client.aclose()
    await identity_channel.close()
    await keydir_channel.close()
    await traced_channel.close()
    latencies.sort()
    rate = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "bundle_fetch": Figure(
            unit="bundle fetches/s",
            ours=rate["ours"],
            floor=rate["floor"],
            target=0.2,
            extra={
                "concurrency": CONCURRENCY,
                "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
                "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
                "cpu_us_per_fetch": ours_cpu.per_unit_us(counts["ours"]),
                "floor_cpu_us_per_fetch": floor_cpu.per_unit_us(counts["floor"]),
                **traffic["ours"].per_fetch(counts["ours"]),
                "floor_redis": traffic["floor"].per_fetch(counts["floor"]),
                "keydir_cpu_profile": profile,
                # What a do-nothing call reaches on the same server: the part of the floor no gRPC service here
                # can beat, whatever it does per call.
                "health_checks_per_s": round(rate["health"], 1),
                "health_check_ratio": round(rate["health"] / rate["floor"], 4),
                "health_check_keydir_cpu_us": health_cpu.per_unit_us(counts["health"])["keydir_cpu_us"],
                "floor_desc": "claim_bundles.lua via redis-py, same concurrency, same process as the client",
                "note": "assertions are minted before each round (a provider's backend mints them on its own machines)",
            },
        ),
        "bundle_fetch_session": Figure(
            unit="bundle fetches/s",
            ours=rate["session"],
            floor=rate["floor"],
            target=0.2,
            extra={
                "concurrency": CONCURRENCY,
                "cpu_us_per_fetch": session_cpu.per_unit_us(counts["session"]),
                **traffic["session"].per_fetch(counts["session"]),
                "assertion_rate": rate["ours"],
                "floor_desc": "claim_bundles.lua via redis-py, same concurrency, same process as the client",
                "ours_desc": "one provider session (CreateSession) for every call: an HMAC token plus x-parley-user "
                "and x-parley-device, no per-call Ed25519 or replay-guard round trip",
            },
        ),
        "bundle_fetch_production_telemetry": Figure(
            unit="bundle fetches/s",
            ours=rate["traced"],
            floor=rate["ours"],
            target=0.9,
            extra={
                "keydir_cpu_us_per_fetch": traced_cpu.per_unit_us(counts["traced"])["keydir_cpu_us"],
                "keydir_cpu_us_per_fetch_without": ours_cpu.per_unit_us(counts["ours"])["keydir_cpu_us"],
                "spans_exported": sink.spans - spans_before,
                "metric_exports": sink.metric_exports,
                "floor_desc": "the same fetches through a second key directory with telemetry off",
                "ours_desc": "traces sampled parent-based at 1 %, traces and metrics exported over OTLP",
            },
        ),
    }


if __name__ == "__main__":
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    asyncio.run(main())
