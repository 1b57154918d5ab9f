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

Redis = aioredis.Redis


def connect(
    url: str,
    *,
    max_connections: int = 64,
    timeout_s: float = 1.0,
    blocking_reads_s: float = 0.0,
    pool_timeout_s: float = 5.0,
) -> Redis:
    """A pooled client whose every command has a deadline, retrying lost connections with jittered backoff.

    A command that gets no answer within ``timeout_s`` (Redis paused, overloaded or partitioned away) fails with
    a timeout at once and is not retried, so a call waiting on Redis fails fast as UNAVAILABLE /
    DEPENDENCY_UNAVAILABLE instead of hanging for retries of retries. Lost connections (a Redis restart) are
    retried: a retried write may therefore run twice, which is why every multi-step write is an idempotent
    script or is followed by consumers that de-duplicate.

    The pool blocks: a burst wider than ``max_connections`` (hundreds of streams opening at once) waits for a
    free connection instead of failing, and the process never holds more connections (memory, Redis clients)
    than the pool size.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        max_connections: pool size.
        timeout_s: deadline of each command and of connecting.
        blocking_reads_s: the longest a blocking read (``XREAD BLOCK``) of this client waits on purpose; its
            commands' deadline is ``timeout_s`` beyond it.
        pool_timeout_s: how long a command waits for a free pooled connection before failing as unavailable:
            queueing behind a burst (thousands of streams opening at once) is not Redis being slow, so this is
            longer than a command's deadline.

    Returns:
        The client (bytes in, bytes out).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries=3),
        retry_on_error=[RedisConnectionError],
        retry_on_timeout=False,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s + blocking_reads_s,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


def load_script(client: Redis, package: str, name: str) -> AsyncScript:
    """Registers the Lua script ``<package>/lua/<name>.lua``; it runs by EVALSHA, re-loading after a flush."""
    source = resources.files(package).joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)
