"""Helpers for the notification tests: a real HTTP webhook endpoint, fast service settings, event publishing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from aiohttp import web

from parley.events.v1.events_pb2 import Event, MessageWaiting
from parley.notification.v1 import notification_pb2 as pb
from parley.notification.v1 import notification_pb2_grpc
from parley_notification.app import NotificationSettings, build_notification
from parley_runtime.events import EventPublisher
from parley_runtime.redis_client import Redis, connect
from support.cluster import Cluster, ProviderKeys

WAIT_S = 20.0
"""How long a test waits for something that should happen within milliseconds, before failing."""

FAST = {
    "webhook_allow_loopback_http": True,
    "webhook_timeout_s": 1.0,
    "delivery_lease_ms": 2000,
    "backoff_base_ms": 10,
    "backoff_max_ms": 40,
    "poll_interval_ms": 20,
    "read_block_ms": 50,
    "reclaim_interval_ms": 50,
    "coalesce_window_ms": 0,
}
"""Settings that keep the tests fast: tiny backoffs and polls, short timeouts, no coalescing unless asked."""


@dataclass(frozen=True)
class Received:
    """One request the webhook endpoint received."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def document(self) -> dict[str, Any]:
        """The JSON body."""
        return json.loads(self.body)

    @property
    def key(self) -> str:
        """The Idempotency-Key header."""
        return self.headers["Idempotency-Key"]


Behaviour = Callable[[Received, int], Awaitable[int]]
"""Decides the response status for a request (and may sleep); gets the request and its index from 0."""


async def healthy(_request: Received, _index: int) -> int:
    """Accepts everything."""
    return 200


@dataclass
class WebhookReceiver:
    """A provider's webhook endpoint: a real aiohttp server on loopback that records every request it answers.

    ``accepted`` holds the requests answered with 2xx, ``received`` every request (including those whose
    response the client gave up waiting for).
    """

    behaviour: Behaviour = healthy
    received: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    port: int = 0

    async def start(self) -> str:
        """Starts serving on a free loopback port; returns the webhook URL."""
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        """Stops serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(request.path, dict(request.headers), await request.read())
        index = len(self.received)
        self.received.append(received)
        status = await self.behaviour(received, index)
        if 200 <= status < 300:
            self.accepted.append(received)
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Waits until ``predicate()`` holds after some request (fails the test after :data:`WAIT_S`)."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(predicate)


async def start_notification(cluster: Cluster, name: str = "notification", **overrides: object) -> str:
    """Starts a notification service with :data:`FAST` settings (``overrides`` win); returns its target."""
    return await cluster.start(name, NotificationSettings, build_notification, **{**FAST, **overrides})


def notification(cluster: Cluster, name: str = "notification") -> notification_pb2_grpc.NotificationServiceStub:
    """A notification client stub."""
    return notification_pb2_grpc.NotificationServiceStub(cluster.channel(name))


async def register_webhook(cluster: Cluster, keys: ProviderKeys, url: str, name: str = "notification") -> bytes:
    """Registers ``keys``' provider's webhook through service ``name``; returns the signing secret."""
    response = await notification(cluster, name).RegisterWebhook(
        pb.RegisterWebhookRequest(url=url), metadata=keys.auth(keys.provider_id)
    )
    return response.signing_secret


async def publish(redis_url: str, domain: str, *events: Event) -> list[str]:
    """Appends events to ``events:{<domain>}`` as the emitting service would; returns their ids."""
    client = redis_client(redis_url)
    try:
        publisher = EventPublisher(client, domain)
        return [await publisher.publish(event) for event in events]
    finally:
        await client.aclose()


def redis_client(redis_url: str) -> Redis:
    """A client of the test's Redis, in cluster mode when ``redis_url`` names a Redis Cluster node."""
    with redis.Redis.from_url(redis_url) as probe:
        cluster = bool(probe.info("cluster").get("cluster_enabled"))
    return connect(redis_url, cluster=cluster)


def message_waiting(address: str, pending: int = 1) -> Event:
    """A ``message_waiting`` event as the relay emits it."""
    return Event(message_waiting=MessageWaiting(address=address, pending=pending))


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Polls ``check`` until it holds (fails the test after :data:`WAIT_S`).

    For state in Redis or behind an RPC, which offers nothing to wait on.
    """
    async with asyncio.timeout(WAIT_S):
        while not await check():  # noqa: ASYNC110 -- the state is in another process; there is no event to await
            await asyncio.sleep(0.02)


async def drained(redis_url: str, domain: str) -> None:
    """Waits until the notification group has read and acknowledged every event of ``events:{<domain>}``."""
    client = redis_client(redis_url)
    stream = f"events:{{{domain}}}"

    async def caught_up() -> bool:
        groups = await client.xinfo_groups(stream) if await client.exists(stream) else []
        group = next((g for g in groups if g["name"] == b"notification"), None)
        return group is not None and group["lag"] == 0 and group["pending"] == 0

    try:
        await eventually(caught_up)
    finally:
        await client.aclose()
