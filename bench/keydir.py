"""Bundle fetches per second through the key directory, beside the floor of the same Lua claim via redis-py.

Ours: ``FetchPreKeyBundles`` for one device over real gRPC, with a fresh one-time assertion per call, through the
real key-directory and identity services (separate processes) and a real Redis. Floor: the very same
``claim_bundles.lua`` script called straight through redis-py from this process, at the same concurrency. Both
claim real one-time prekeys from long lists, so neither side measures the cheaper exhausted path.

Writes bench/results/keydir.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import grpc.aio
import redis.asyncio as aioredis
from benchlib import Figure, parse_args, write_results
from benchworld import CREDENTIALS, auth, enlist, service_env

from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley.keydir.v1 import keydir_pb2_grpc
from parley_crypto import IdentityKeyPair, generate_prekeys, generate_signed_prekey
from parley_runtime import redis_keys
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
        identity_process = ServiceProcess("parley_identity", env, credentials=CREDENTIALS)
        identity_process.start()
        keydir_process = ServiceProcess(
            "parley_keydir",
            {
                **env,
                "PARLEY_IDENTITY_TARGET": identity_process.target,
                "PARLEY_FETCH_BURST": "10000000",
                "PARLEY_FETCH_PER_SECOND": "10000000",
                "PARLEY_PROVIDER_FETCH_BURST": "10000000",
                "PARLEY_PROVIDER_FETCH_PER_SECOND": "10000000",
                # One requester fetches one device in a loop: the drain guard would rightly withhold its keys.
                "PARLEY_DRAIN_GUARD_CLAIMS": "1000000",
                "PARLEY_MAX_INFLIGHT_CALLS": "100000",
            },
            credentials=CREDENTIALS,
        )
        keydir_process.start()
        try:
            figure = await _measure(redis_server.url, identity_process, keydir_process, seconds, rounds)
        finally:
            keydir_process.stop()
            identity_process.stop()
    write_results("keydir", {"bundle_fetch": figure}, quick=args.quick, out=args.out)


async def _measure(
    redis_url: str, identity_process: ServiceProcess, keydir_process: ServiceProcess, seconds: float, rounds: int
) -> Figure:
    identity_channel = grpc.aio.insecure_channel(identity_process.target)
    keydir_channel = grpc.aio.insecure_channel(keydir_process.target)
    identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
    keydir = keydir_pb2_grpc.KeyDirectoryServiceStub(keydir_channel)
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
    client = aioredis.Redis.from_url(redis_url)
    # Enough prekeys that no round runs dry: the service side on device 1, the floor on a twin device 2 record.
    budget = int(seconds * rounds * 20_000)
    await _fill(client, BOB, 1, budget // 4, 1)
    record: dict[Any, Any] = await client.hgetall(redis_keys.device_keys(BOB, 1))
    await client.hset(redis_keys.device_keys(BOB, 2), mapping=record)
    await _fill(client, BOB, 2, budget, 1)

    request = kd_pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1")

    async def ours() -> None:
        response = await keydir.FetchPreKeyBundles(request, metadata=auth(birdy, "birdy", ALICE, 1))
        assert not response.bundles[0].one_time_prekey_exhausted

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

    await _run_for(0.5, ours)  # warm-up: connections, script cache, JIT-free but cache-warm paths
    await _run_for(0.5, floor)
    ours_rates, floor_rates, latencies = [], [], []
    for _ in range(rounds):
        count, lat = await _run_for(seconds, ours)
        ours_rates.append(count / seconds)
        latencies += lat
        count, _ = await _run_for(seconds, floor)
        floor_rates.append(count / seconds)
    await client.aclose()
    await identity_channel.close()
    await keydir_channel.close()
    latencies.sort()
    return Figure(
        unit="bundle fetches/s",
        ours=statistics.median(ours_rates),
        floor=statistics.median(floor_rates),
        extra={
            "concurrency": CONCURRENCY,
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
            "floor_desc": "claim_bundles.lua via redis-py, same concurrency, same process as the client",
        },
    )


if __name__ == "__main__":
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    asyncio.run(main())
