"""Liveness and readiness as gRPC health statuses, so probes ask for the one they mean.

Every service answers the standard ``grpc.health.v1.Health`` service under these names:

- ``liveness``: SERVING while the process serves at all. It ignores dependencies on purpose: a Redis blip must
  not make Kubernetes restart healthy processes (which would drop every open stream for nothing).
- ``readiness``, the overall ``""`` and each gRPC service name (e.g. ``parley.relay.v1.RelayService``): SERVING
  only while every dependency the service cannot work without answers (Redis; identity for the services that
  follow it), so load balancers and Kubernetes stop routing to a process that could only refuse.

A :class:`Readiness` watcher re-runs the dependency checks every ``interval_s`` and flips the statuses; each check
is bounded by its own timeout, so a paused dependency reads as down rather than hanging the watcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from redis.asyncio.cluster import RedisCluster

from parley_runtime.redis_client import Redis

_log = logging.getLogger(__name__)

LIVENESS = "liveness"
"""Health service name of the liveness status."""

READINESS = "readiness"
"""Health service name of the readiness status."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DependencyDown(Exception):
    """A dependency did not answer as it should."""


Check = Callable[[], Awaitable[None]]
"""A dependency check: returns when the dependency works, raises otherwise."""


def redis_check(client: Redis, *, timeout_s: float = 1.0) -> Check:
    """A check that Redis answers a PING within ``timeout_s``; on a cluster, every master must (each holds some
    users' data, so a shard without a master until its replica takes over reads as not ready)."""

    async def check() -> None:
        async with asyncio.timeout(timeout_s):
            if isinstance(client, RedisCluster):
                await client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await client.ping()

    return check


def peer_check(channel: grpc.aio.Channel, name: str, *, timeout_s: float = 1.0) -> Check:
    """A check that the Parley service behind ``channel`` (called ``name`` in logs) reports itself ready."""
    stub = health_pb2_grpc.HealthStub(channel)

    async def check() -> None:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=timeout_s)
        if response.status != _SERVING:
            raise DependencyDown(f"{name} is not ready")

    return check


def service_dependencies(client: Redis, identity: grpc.aio.Channel | None = None) -> list[tuple[str, Check]]:
    """The checks of what every Parley service needs: its Redis, and identity when the service follows it."""
    checks = [("redis", redis_check(client))]
    if identity is not None:
        checks.append(("identity", peer_check(identity, "identity")))
    return checks


class Readiness:
    """Keeps the readiness statuses of one server in step with its dependency checks.

    Args:
        health: the server's health servicer.
        names: the health names that follow readiness (besides ``readiness`` itself).
        checks: named dependency checks; none means always ready.
        interval_s: time between rounds of checks.
    """

    def __init__(
        self,
        health: health_aio.HealthServicer,
        names: Sequence[str],
        checks: Sequence[tuple[str, Check]],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._health = health
        self._names = (READINESS, *names)
        self._checks = list(checks)
        self._interval_s = interval_s
        self._ready: bool | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Whether the last round of checks passed."""
        return bool(self._ready)

    async def start(self) -> None:
        """Marks the process live, runs one round of checks, and keeps running them in the background."""
        await self._health.set(LIVENESS, _SERVING)
        await self.check_once()
        self._task = asyncio.create_task(self._watch(), name="readiness")

    async def stop(self) -> None:
        """Stops checking (the server's graceful shutdown then turns every status NOT_SERVING)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def check_once(self) -> bool:
        """Runs every check once and updates the statuses; returns whether all passed."""
        failed = []
        for name, check in self._checks:
            try:
                await check()
            except Exception as exc:  # any failure of a dependency means "not ready", whatever its type
                failed.append(f"{name}: {exc or type(exc).__name__}")
        ready = not failed
        if ready != self._ready:
            if ready:
                _log.info("ready")
            else:
                _log.warning("not ready: %s", "; ".join(failed))
            for health_name in self._names:
                await self._health.set(health_name, _SERVING if ready else _NOT_SERVING)
            self._ready = ready
        return ready

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check_once()
