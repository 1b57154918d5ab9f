"""Redis access for every service: one pooled client with retries, Lua scripts loaded from files.

Multi-step writes are Lua scripts kept as ``.lua`` files beside the store that uses them; each file documents its
KEYS and ARGV at the top and is called through one thin method of that store.
"""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Redis = aioredis.Redis


def connect(url: str, *, max_connections: int = 64, pool_timeout_s: float = 5.0) -> Redis:
    """A pooled client that retries transient connection errors with jittered exponential backoff.

    Retries cover connection loss and timeouts only; a retried write may therefore run twice, which is why
    every multi-step write is an idempotent script or is followed by consumers that de-duplicate.

    The pool blocks: a burst wider than ``max_connections`` (hundreds of streams opening at once) waits for a
    free connection instead of failing, and the process never holds more connections (memory, Redis clients)
    than the pool size.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        max_connections: pool size.
        pool_timeout_s: how long a command waits for a free connection before failing as unavailable.

    Returns:
        The client (bytes in, bytes out).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=1.0), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


def load_script(client: Redis, package: str, name: str) -> AsyncScript:
    """Registers the Lua script ``<package>/lua/<name>.lua``; it runs by EVALSHA, re-loading after a flush."""
    source = resources.files(package).joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)
