"""Redis access for every service: one pooled client with retries, Lua scripts loaded from files.

The client is a single-node ``redis.asyncio.Redis`` or, when ``PARLEY_REDIS_CLUSTER`` is on, a Redis Cluster client
(``redis.asyncio.cluster.RedisCluster``) with the same deadlines, retries and pool behaviour: stores use either
through the same commands, because every multi-key command, script and transaction keeps to one slot (the keys'
``{hash tags}``, see :mod:`parley_runtime.redis_keys`).

Multi-step writes are Lua scripts kept as ``.lua`` files beside the store that uses them; each file documents its
KEYS and ARGV at the top and is called through one thin method of that store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, PipelineStrategy, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

Redis = aioredis.Redis | RedisCluster
"""A client of either kind; what :func:`connect` returns."""

_RETRIES = 3
_BACKOFF = ExponentialWithJitterBackoff(base=0.02, cap=0.25)

# What a cluster client retries, after refreshing its view of the cluster: a lost connection (a node restarting
# or failed over) and a cluster that is re-forming. Not a command past its deadline (redis-py's default retries
# those too): a slow Redis must fail the call fast, as with a single node.
_CLUSTER_RETRIED = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)

_HOLDS_PERMIT: ContextVar[bool] = ContextVar("parley_redis_holds_permit", default=False)
"""Set while a task runs a command under a permit, so the commands redis-py issues inside it (redirections, a
pipeline's per-node parts) do not wait for a second permit."""


def connect(
    url: str,
    *,
    cluster: bool = False,
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

    With ``cluster``, the client discovers the cluster from ``url`` (any one node), sends each command to the
    node owning its slot, follows MOVED and ASK redirections, and refreshes its slot map when a node goes away
    (a failover). ``max_connections`` then bounds the commands in flight (they wait up to ``pool_timeout_s``
    for a turn, as for a single node) and the connections to each node.

    Args:
        url: ``redis://``, ``rediss://`` or (not with ``cluster``) ``unix://`` URL.
        cluster: talk to a Redis Cluster.
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
    if cluster:
        return ClusterClient.from_url(
            url,
            pool_timeout_s=pool_timeout_s,
            max_connections=max_connections,
            retry=Retry(_BACKOFF, retries=_RETRIES),
            # A cluster missing a shard still serves the users whose slots the other shards hold.
            require_full_coverage=False,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s + blocking_reads_s,
            health_check_interval=30,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        retry=Retry(_BACKOFF, retries=_RETRIES),
        retry_on_error=[RedisConnectionError],
        retry_on_timeout=False,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s + blocking_reads_s,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


def is_cluster(client: Redis) -> bool:
    """Whether ``client`` talks to a Redis Cluster (stores choose sharded pub/sub by it)."""
    return isinstance(client, RedisCluster)


def load_script(client: Redis, package: str, name: str) -> AsyncScript:
    """Registers the Lua script ``<package>/lua/<name>.lua``; it runs by EVALSHA, re-loading after a flush."""
    source = resources.files(package).joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)


def queue_script(pipe: Any, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queues one EVALSHA of ``script`` in a pipeline of either client kind (no SCRIPT EXISTS round trip first).

    redis-py's cluster pipeline refuses its ``evalsha`` method; the command itself is routed by its keys, which
    share one slot in every Parley script, like any other keyed command.
    """
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def load_scripts(client: Redis, scripts: Sequence[AsyncScript]) -> None:
    """Loads ``scripts`` into Redis (into every master of a cluster): after a restart, a flush or a failover the
    server's script cache is empty, and EVALSHA sent in a pipeline does not load a missing script by itself."""
    if isinstance(client, RedisCluster):
        # SCRIPT LOAD goes to every master; a cluster pipeline sends each command to one node only.
        await asyncio.gather(*(client.script_load(script.script) for script in scripts))
        return
    async with client.pipeline(transaction=False) as pipe:
        for script in scripts:
            pipe.script_load(script.script)
        await pipe.execute()


class ClusterClient(RedisCluster):
    """The Redis Cluster client :func:`connect` makes: redis-py's, with a single node's retry and pool rules.

    Args:
        pool_timeout_s: how long a command waits for its turn when ``max_connections`` commands are in flight.
        kwargs: :class:`~redis.asyncio.cluster.RedisCluster` arguments.
    """

    ERRORS_ALLOW_RETRY = _CLUSTER_RETRIED  # type: ignore[assignment]  # narrower on purpose: no timeouts

    def __init__(self, *, pool_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._permits = asyncio.Semaphore(int(kwargs["max_connections"]))
        self._pool_timeout_s = pool_timeout_s

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """A turn to run commands (re-entrant within a task).

        Raises:
            redis.exceptions.ConnectionError: no turn came within the pool timeout (as a full single-node pool).
        """
        if _HOLDS_PERMIT.get():
            yield
            return
        try:
            async with asyncio.timeout(self._pool_timeout_s):
                await self._permits.acquire()
        except TimeoutError:
            raise RedisConnectionError("no Redis connection available") from None
        token = _HOLDS_PERMIT.set(True)
        try:
            yield
        finally:
            _HOLDS_PERMIT.reset(token)
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Runs one command under a permit."""
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        """A pipeline; without ``transaction``, one that retries as :func:`connect` describes."""
        pipe = super().pipeline(transaction, shard_hint)
        if not transaction:
            # redis-py offers no other way to choose how a pipeline runs.
            pipe._execution_strategy = _PipelineStrategy(pipe)
        return pipe


class _PipelineStrategy(PipelineStrategy):
    """Runs a cluster pipeline (no transaction) with the single-node rules: commands that lost their connection
    are sent again once the slot map is refreshed, backing off; a command past its deadline is not (redis-py's own
    strategy re-sends the whole pipeline after a timeout too). Only the commands without an answer are re-sent."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self._pipe.cluster_client
        assert isinstance(client, ClusterClient)
        try:
            async with client.permit():
                for attempt in range(_RETRIES + 1):
                    await client.initialize()
                    results: list[Any] = await self._execute(
                        client, self._command_queue, raise_on_error=False, allow_redirections=allow_redirections
                    )
                    if attempt == _RETRIES or not any(isinstance(r, _CLUSTER_RETRIED) for r in results):
                        break
                    await client.nodes_manager.initialize()
                    await asyncio.sleep(_BACKOFF.compute(attempt + 1))
            if raise_on_error:
                for result in results:
                    if isinstance(result, Exception):
                        raise result
            return results
        finally:
            await self.reset()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
