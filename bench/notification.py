"""Webhook deliveries per second through the notification service, beside a bare aiohttp POST loop.

Ours: ``message_waiting`` events (one per device, so none coalesce) appended to ``events:{relay}`` as the relay
appends them, taken in by a real notification process (consumer group, routing, queueing script), claimed,
signed and POSTed by its delivery worker to a local aiohttp endpoint, and ended in Redis; the figure is events
per second from the first append until the endpoint has them all and the queue is empty. Floor: this process
POSTing bodies of the same size to the same endpoint with the same client library (one aiohttp session) at the
same concurrency: the HTTP work a delivery cannot avoid. The endpoint runs in its own process for both sides.
Extras: the endpoint's view of latency from event append to arrival, within the bursts (a backlog of a whole
round) and for single events on an idle queue.

Writes bench/results/notification.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time

import aiohttp
import grpc.aio
import redis.asyncio as aioredis
from aiohttp import web
from benchlib import Figure, parse_args, write_results
from benchworld import CREDENTIALS, enlist, service_env

from parley.events.v1.events_pb2 import Event, MessageWaiting
from parley.identity.v1 import identity_pb2_grpc
from parley.notification.v1 import notification_pb2 as nt_pb
from parley.notification.v1 import notification_pb2_grpc
from parley_runtime.auth import mint_assertion
from parley_runtime.testing import RedisServer, ServiceProcess, free_port

CONCURRENCY = 64
ENDPOINT_FLAG = "--serve-endpoint"


def serve_endpoint(port: int) -> None:
    """The provider's webhook: counts POSTs and the deliveries' latency; ``GET /stats`` reports, ``POST /reset``
    forgets the latencies."""
    count = 0
    latencies: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        body = await request.json()
        count += 1
        if "Parley-Signature" in request.headers:  # a delivery, not a floor request
            latencies.append(time.time() * 1000 - body["occurred_at_ms"])
        return web.Response(status=204)

    async def stats(_request: web.Request) -> web.Response:
        ordered = sorted(latencies)
        report: dict[str, float] = {"count": count}
        if ordered:
            report |= {"p50_ms": ordered[len(ordered) // 2], "p99_ms": ordered[int(len(ordered) * 0.99)]}
        return web.json_response(report)

    app = web.Application()
    app.router.add_post("/hook", hook)

    async def reset(_request: web.Request) -> web.Response:
        latencies.clear()
        return web.Response(status=204)

    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _stats(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/stats") as response:
        return dict(await response.json())


async def _reset(session: aiohttp.ClientSession, base: str) -> None:
    async with session.post(f"{base}/reset") as response:
        await response.read()


async def _wait_for_count(session: aiohttp.ClientSession, base: str, target: int) -> None:
    # The count lives in the endpoint's process; polling it is the only way to see it.
    while (await _stats(session, base))["count"] < target:  # noqa: ASYNC110 -- no event crosses the process
        await asyncio.sleep(0.01)


async def _ours(client: aioredis.Redis, session: aiohttp.ClientSession, base: str, events: int, round_: int) -> float:
    """Appends ``events`` message_waiting events and returns events/s until the endpoint has them all."""
    already = int((await _stats(session, base))["count"])
    entries = []
    for n in range(events):
        event = Event(
            event_id=f"{round_:08x}{n:024x}",
            occurred_at_ms=int(time.time() * 1000),
            message_waiting=MessageWaiting(address=f"username:u{n}@birdy/1", pending=1),
        )
        entries.append({"type": "message_waiting", "event": event.SerializeToString()})
    start = time.perf_counter()
    async with client.pipeline(transaction=False) as pipe:
        for fields in entries:
            pipe.xadd("events:{relay}", fields)  # type: ignore[arg-type]
        await pipe.execute()
    await _wait_for_count(session, base, already + events)
    # Done means recorded too: every delivery ended in Redis, none left to be attempted again.
    while await client.zcard("notify:{queue}:due"):  # noqa: ASYNC110 -- the queue is in Redis; nothing to await
        await asyncio.sleep(0.005)
    return events / (time.perf_counter() - start)


async def _floor(session: aiohttp.ClientSession, url: str, body: bytes, requests: int) -> float:
    """POSTs ``requests`` bodies at CONCURRENCY and returns requests/s."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            headers = {"Content-Type": "application/json", "Idempotency-Key": "k" * 32}
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                assert response.status == 204

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - start)


def main() -> None:
    args = parse_args(__doc__ or "")
    port = free_port()
    endpoint = subprocess.Popen([sys.executable, __file__, ENDPOINT_FLAG, str(port)])  # noqa: S603 -- this script
    try:
        figure = asyncio.run(_run(port, events=1500 if args.quick else 6000, rounds=2 if args.quick else 3))
    finally:
        endpoint.terminate()
        endpoint.wait()
    write_results("notification", {"webhook_delivery": figure}, quick=args.quick, out=args.out)


async def _run(port: int, *, events: int, rounds: int) -> Figure:
    with RedisServer() as redis_server:
        env = service_env(redis_server.url)
        identity_process = ServiceProcess("parley_identity", env, credentials=CREDENTIALS)
        identity_process.start()
        notification_process = ServiceProcess(
            "parley_notification",
            {
                **env,
                "PARLEY_IDENTITY_TARGET": identity_process.target,
                "PARLEY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
                "PARLEY_DELIVERY_CONCURRENCY": str(CONCURRENCY),
                "PARLEY_COALESCE_WINDOW_MS": "0",
            },
            credentials=CREDENTIALS,
        )
        notification_process.start()
        try:
            return await _measure(redis_server.url, identity_process, notification_process, port, events, rounds)
        finally:
            notification_process.stop()
            identity_process.stop()


async def _measure(
    redis_url: str,
    identity_process: ServiceProcess,
    notification_process: ServiceProcess,
    port: int,
    events: int,
    rounds: int,
) -> Figure:
    identity_channel = grpc.aio.insecure_channel(identity_process.target)
    notification_channel = grpc.aio.insecure_channel(notification_process.target)
    identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
    notification = notification_pb2_grpc.NotificationServiceStub(notification_channel)
    birdy = await enlist(identity, "birdy")
    base = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(30):
        while True:
            token = mint_assertion(birdy, provider_id="birdy", subject="birdy")
            try:
                await notification.RegisterWebhook(
                    nt_pb.RegisterWebhookRequest(url=f"{base}/hook"), metadata=(("authorization", f"Bearer {token}"),)
                )
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)  # the approval has not reached notification's provider cache yet
    client = aioredis.Redis.from_url(redis_url)
    # The floor posts what a delivery posts: a body of the same shape and size.
    body = (
        b'{"coalesced":0,"data":{"address":"username:u1000@birdy/1","pending":1},'
        b'"id":"0123456789abcdef0123456789abcdef","occurred_at_ms":1795326745167,"type":"message_waiting"}'
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async with asyncio.timeout(30):
            while True:
                try:
                    await _stats(session, base)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        await _ours(client, session, base, 200, 0xFFFF)  # warm-up: connections, script cache
        await _floor(session, f"{base}/hook", body, 200)
        ours_rates, floor_rates, p50s, p99s = [], [], [], []
        for round_ in range(rounds):
            await _reset(session, base)
            ours_rates.append(await _ours(client, session, base, events, round_))
            stats = await _stats(session, base)
            p50s.append(stats["p50_ms"])
            p99s.append(stats["p99_ms"])
            floor_rates.append(await _floor(session, f"{base}/hook", body, events))
        # Latency without a backlog: one event at a time, from its append to the endpoint.
        await _reset(session, base)
        for n in range(50):
            await _ours(client, session, base, 1, 0x10000 + n)
        idle = await _stats(session, base)
    await client.aclose()
    await identity_channel.close()
    await notification_channel.close()
    return Figure(
        unit="webhook deliveries/s",
        ours=statistics.median(ours_rates),
        floor=statistics.median(floor_rates),
        extra={
            "concurrency": CONCURRENCY,
            "events_per_round": events,
            "rounds": rounds,
            "burst_event_to_endpoint_p50_ms": round(statistics.median(p50s), 1),
            "burst_event_to_endpoint_p99_ms": round(statistics.median(p99s), 1),
            "idle_event_to_endpoint_p50_ms": round(idle["p50_ms"], 1),
            "idle_event_to_endpoint_p99_ms": round(idle["p99_ms"], 1),
            "floor_desc": "aiohttp POSTs of a same-size body to the same endpoint, same concurrency, one session",
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == [ENDPOINT_FLAG]:
        serve_endpoint(int(sys.argv[2]))
    else:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        main()
