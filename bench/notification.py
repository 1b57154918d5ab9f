"""Webhook deliveries per second through the notification service, beside a bare aiohttp POST loop.

Ours: ``message_waiting`` events (one per device, so none coalesce) appended to ``events:{relay}`` as the relay
appends them, taken in by a real notification process (consumer group, routing, queueing script), claimed,
signed and POSTed by its delivery worker to a local aiohttp endpoint, and ended in Redis; the figure is events
per second from the first append until the endpoint has them all and the queue is empty. Floor: the bare signed
POST: this process signing (``parley_sdk.webhooks.sign``) and POSTing bodies of the same size with the same headers
to the same endpoint with the same client library (one aiohttp session) at the same concurrency: the HTTP work a
delivery cannot avoid. The endpoint runs in its own process for both sides. The service runs with telemetry off.
Extras: the endpoint's view of latency from event append to arrival, within the bursts (a backlog of a whole
round) and for single events on an idle queue; CPU per delivery of each process; where notification's CPU goes
(a py-spy profile of one more round, by layer); Redis requests per delivery (Redis's count of reads from its
clients, the bench's own subtracted: one per command, pipeline or script call notification sends).

Ours (``webhook_delivery_production_telemetry``): the same bursts through a second notification process with
production telemetry (bench/benchtelemetry.py), beside the first one's rate in the same rounds (target: at most
10 % less). That process has a Redis and an identity of its own, so the two share nothing but the endpoint, and
they take turns: each sits idle while the other's burst is measured.

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
from benchlib import CpuMeter, Figure, parse_args, profile_layers, write_results
from benchtelemetry import TELEMETRY_OFF, OtlpSink, production_telemetry
from benchworld import CREDENTIALS, enlist, service_env

from parley.events.v1.events_pb2 import Event, MessageWaiting
from parley.identity.v1 import identity_pb2_grpc
from parley.notification.v1 import notification_pb2 as nt_pb
from parley.notification.v1 import notification_pb2_grpc
from parley_runtime.auth import mint_assertion
from parley_runtime.testing import RedisServer, ServiceProcess, free_port
from parley_sdk import webhooks

CONCURRENCY = 64
FLOOR_SECRET = b"bench-floor-webhook-secret-of-32b"
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
        if request.headers.get("Idempotency-Key") != "k" * 32:  # a delivery, not a floor request
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


def _events(events: int, round_: int) -> list[dict[str, bytes | str]]:
    entries: list[dict[str, bytes | str]] = []
    for n in range(events):
        event = Event(
            event_id=f"{round_:08x}{n:024x}",
            occurred_at_ms=int(time.time() * 1000),
            message_waiting=MessageWaiting(address=f"username:u{n}@birdy/1", pending=1),
        )
        entries.append({"type": "message_waiting", "event": event.SerializeToString()})
    return entries


async def _append(client: aioredis.Redis, stream: str, entries: list[dict[str, bytes | str]]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for fields in entries:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        await pipe.execute()


class _RedisRequests:
    """Counts the requests (socket reads: a pipeline is one, or a few when large) Redis served for notification
    during ``_ours`` rounds: Redis's ``total_reads_processed`` minus the bench's own requests (its appends, as
    measured by :meth:`calibrate`, its queue polls and these INFO calls)."""

    def __init__(self) -> None:
        self.notification = 0
        self.deliveries = 0
        self.append_cost = 0

    @staticmethod
    async def reads(client: aioredis.Redis) -> int:
        return int((await client.info("stats"))["total_reads_processed"])

    async def calibrate(self, client: aioredis.Redis, events: int) -> None:
        """Measures the appends of a round: the same entries (same sizes) to a stream nobody reads."""
        before = await self.reads(client)
        await _append(client, "bench:{calibration}", _events(events, 0))
        self.append_cost = await self.reads(client) - before - 1
        await client.delete("bench:{calibration}")

    def per_delivery(self) -> float:
        return round(self.notification / max(1, self.deliveries), 3)


async def _ours(
    client: aioredis.Redis,
    session: aiohttp.ClientSession,
    base: str,
    events: int,
    round_: int,
    requests: _RedisRequests | None = None,
) -> float:
    """Appends ``events`` message_waiting events and returns events/s until the endpoint has them all; with
    ``requests``, adds notification's Redis requests in the meantime to it."""
    already = int((await _stats(session, base))["count"])
    entries = _events(events, round_)
    own = 0
    if requests is not None:
        own = requests.append_cost + 1  # the appends, and the INFO call that ends the count
        reads_before = await requests.reads(client)
    start = time.perf_counter()
    await _append(client, "events:{relay}", entries)
    await _wait_for_count(session, base, already + events)
    # Done means recorded too: every delivery ended in Redis, none left to be attempted again.
    while await client.zcard("notify:{queue}:due"):  # the queue is in Redis; nothing to await
        own += 1
        await asyncio.sleep(0.005)
    own += 1
    elapsed = time.perf_counter() - start
    if requests is not None:
        requests.notification += await requests.reads(client) - reads_before - own
        requests.deliveries += events
    return events / elapsed


async def _floor(session: aiohttp.ClientSession, url: str, body: bytes, requests: int) -> float:
    """POSTs ``requests`` bodies at CONCURRENCY and returns requests/s."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                webhooks.TIMESTAMP_HEADER: str(timestamp),
                webhooks.SIGNATURE_HEADER: webhooks.sign(FLOOR_SECRET, timestamp, body),
                webhooks.IDEMPOTENCY_HEADER: "k" * 32,
                webhooks.EVENT_TYPE_HEADER: "message_waiting",
                webhooks.ATTEMPT_HEADER: "1",
            }
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
        figures = asyncio.run(_run(port, events=1500 if args.quick else 6000, rounds=2 if args.quick else 3))
    finally:
        endpoint.terminate()
        endpoint.wait()
    write_results("notification", figures, quick=args.quick, out=args.out)


class _World:
    """A Redis, an identity and a notification process with ``telemetry``, birdy's webhook on the endpoint."""

    def __init__(self, telemetry: dict[str, str]) -> None:
        self.redis = RedisServer()
        self._telemetry = telemetry
        self.notification: ServiceProcess | None = None
        self._identity: ServiceProcess | None = None
        self.client: aioredis.Redis | None = None

    async def start(self, base: str) -> None:
        self.redis.start()
        env = service_env(self.redis.url)
        self._identity = ServiceProcess("parley_identity", {**env, **TELEMETRY_OFF}, credentials=CREDENTIALS)
        self._identity.start()
        self.notification = ServiceProcess(
            "parley_notification",
            {
                **env,
                **self._telemetry,
                "PARLEY_IDENTITY_TARGET": self._identity.target,
                "PARLEY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
                "PARLEY_DELIVERY_CONCURRENCY": str(CONCURRENCY),
                "PARLEY_COALESCE_WINDOW_MS": "0",
            },
            credentials=CREDENTIALS,
        )
        self.notification.start()
        self.client = aioredis.Redis.from_url(self.redis.url)
        async with (
            grpc.aio.insecure_channel(self._identity.target) as identity_channel,
            grpc.aio.insecure_channel(self.notification.target) as notification_channel,
        ):
            birdy = await enlist(identity_pb2_grpc.IdentityServiceStub(identity_channel), "birdy")
            notification = notification_pb2_grpc.NotificationServiceStub(notification_channel)
            async with asyncio.timeout(30):
                while True:
                    token = mint_assertion(birdy, provider_id="birdy", subject="birdy")
                    try:
                        await notification.RegisterWebhook(
                            nt_pb.RegisterWebhookRequest(url=f"{base}/hook"),
                            metadata=(("authorization", f"Bearer {token}"),),
                        )
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.05)  # the approval has not reached notification's provider cache yet

    @property
    def pid(self) -> int:
        assert self.notification is not None
        assert self.notification.process is not None
        return self.notification.process.pid

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        for process in (self.notification, self._identity):
            if process is not None:
                process.stop()
        self.redis.stop()


async def _run(port: int, *, events: int, rounds: int) -> dict[str, Figure]:
    base = f"http://127.0.0.1:{port}"
    async with OtlpSink() as sink:
        worlds = {"ours": _World(TELEMETRY_OFF), "traced": _World(production_telemetry(sink.port))}
        try:
            for world in worlds.values():
                await world.start(base)
            return await _measure(worlds, sink, base, events, rounds)
        finally:
            for world in worlds.values():
                await world.stop()


async def _measure(worlds: dict[str, _World], sink: OtlpSink, base: str, events: int, rounds: int) -> dict[str, Figure]:
    # The floor posts what a delivery posts: a body of the same shape and size.
    body = (
        b'{"coalesced":0,"data":{"address":"username:u1000@birdy/1","pending":1},'
        b'"id":"0123456789abcdef0123456789abcdef","occurred_at_ms":1795326745167,"type":"message_waiting"}'
    )
    ours, traced = worlds["ours"], worlds["traced"]
    assert ours.client is not None
    assert traced.client is not None
    meters = {
        "ours": CpuMeter({"notification": ours.pid, "redis": ours.redis.pid, "endpoint_and_client": os.getpid()}),
        "traced": CpuMeter({"notification": traced.pid}),
        "floor": CpuMeter({"client": os.getpid()}),
    }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async with asyncio.timeout(30):
            while True:
                try:
                    await _stats(session, base)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        for world in worlds.values():
            assert world.client is not None
            await _ours(world.client, session, base, 200, 0xFFFF)  # warm-up: connections, script cache
        await _floor(session, f"{base}/hook", body, 200)
        rates: dict[str, list[float]] = {"ours": [], "traced": [], "floor": []}
        p50s, p99s = [], []
        requests = _RedisRequests()
        await requests.calibrate(ours.client, events)
        spans_before = sink.spans
        for round_ in range(rounds):
            await _reset(session, base)
            meters["ours"].start()
            rates["ours"].append(await _ours(ours.client, session, base, events, round_, requests))
            meters["ours"].stop()
            stats = await _stats(session, base)
            p50s.append(stats["p50_ms"])
            p99s.append(stats["p99_ms"])
            meters["floor"].start()
            rates["floor"].append(await _floor(session, f"{base}/hook", body, events))
            meters["floor"].stop()
            meters["traced"].start()
            rates["traced"].append(await _ours(traced.client, session, base, events, round_))
            meters["traced"].stop()
        profile_task = asyncio.create_task(asyncio.to_thread(profile_layers, ours.pid, 2))
        burst = 0x20000
        while not profile_task.done():
            await _ours(ours.client, session, base, events, burst)
            burst += 1
        profile = await profile_task
        # Latency without a backlog: one event at a time, from its append to the endpoint.
        await _reset(session, base)
        for n in range(50):
            await _ours(ours.client, session, base, 1, 0x10000 + n)
        idle = await _stats(session, base)
    rate = {name: statistics.median(values) for name, values in rates.items()}
    delivered = events * rounds
    return {
        "webhook_delivery": Figure(
            unit="webhook deliveries/s",
            ours=rate["ours"],
            floor=rate["floor"],
            target=0.5,
            extra={
                "concurrency": CONCURRENCY,
                "events_per_round": events,
                "rounds": rounds,
                "burst_event_to_endpoint_p50_ms": round(statistics.median(p50s), 1),
                "burst_event_to_endpoint_p99_ms": round(statistics.median(p99s), 1),
                "idle_event_to_endpoint_p50_ms": round(idle["p50_ms"], 1),
                "idle_event_to_endpoint_p99_ms": round(idle["p99_ms"], 1),
                "cpu_us_per_delivery": meters["ours"].per_unit_us(delivered),
                "redis_requests_per_delivery": requests.per_delivery(),
                "floor_cpu_us_per_post": meters["floor"].per_unit_us(delivered),
                "notification_cpu_profile": profile,
                "floor_desc": "aiohttp POSTs of a same-size body, signed with the same headers, to the same endpoint, "
                "same concurrency, one session",
                "note": "endpoint_and_client: the bench process (its POST floor) is not the endpoint, which runs in "
                "a process of its own for both sides",
            },
        ),
        "webhook_delivery_production_telemetry": Figure(
            unit="webhook deliveries/s",
            ours=rate["traced"],
            floor=rate["ours"],
            target=0.9,
            extra={
                "notification_cpu_us_per_delivery": meters["traced"].per_unit_us(delivered)["notification_cpu_us"],
                "notification_cpu_us_per_delivery_without": meters["ours"].per_unit_us(delivered)[
                    "notification_cpu_us"
                ],
                "spans_exported": sink.spans - spans_before,
                "metric_exports": sink.metric_exports,
                "floor_desc": "the same bursts through a second notification (own Redis, identity) with telemetry off",
                "ours_desc": "traces sampled parent-based at 1 %, traces and metrics exported over OTLP",
            },
        ),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == [ENDPOINT_FLAG]:
        serve_endpoint(int(sys.argv[2]))
    else:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        main()
