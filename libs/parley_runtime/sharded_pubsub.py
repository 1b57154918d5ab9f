"""Sharded pub/sub on a Redis Cluster: one subscriber connection per master, SSUBSCRIBE batched per slot.

Classic PUBLISH on a cluster is broadcast over the cluster bus to every node, so its cost grows with the cluster;
SPUBLISH goes only to the shard owning the channel's slot. Subscribing to shard channels needs a connection to
each master that owns one of them, and every SSUBSCRIBE names channels of one slot only.

redis-py's async ``ClusterPubSub`` does this, but in ways the relay's hub cannot use: it sends one SSUBSCRIBE per
channel without telling when the server accepted it, its ``get_sharded_message`` waits on each node's connection
in turn (a hint on one shard waits out an idle read on another), and after a topology change it moves
subscriptions in tasks of its own, racing the hub's single writer. :class:`ShardedSubscription` is the thin layer
the hub needs instead, with the subset of ``PubSub``'s interface the hub calls:

- ``subscribe``/``unsubscribe`` take any channels; they are grouped by owning master and slot, one command per
  slot, all written before any reply is awaited. ``subscribe`` returns once every channel is confirmed and raises
  if any is not, so a stream's registration stays all or nothing.
- One reader task per master feeds one queue that ``get_message`` reads.
- When a master's connection breaks, or Redis drops shard subscriptions because their slots moved (it sends an
  unrequested ``sunsubscribe`` on failover and resharding), those channels are subscribed again on their new
  owner once the slot map is refreshed, retrying until it works; then ``resubscribed`` runs, because messages
  published meanwhile were lost.

Writes to the connections come only from the caller's calls and from the recovery task, one at a time (a lock),
and neither is cancelled mid-write except at :meth:`ShardedSubscription.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from parley_runtime.background import cancel_and_wait

_log = logging.getLogger(__name__)

_RETRY_S = (0.1, 0.25, 0.5, 1.0)
"""Waits between attempts to subscribe moved channels again (the last one repeats)."""

_Failure = (RedisError, RedisClusterException, OSError)
"""What a lost or refused subscription raises: Redis errors, slot map errors, socket errors."""


class ShardedSubscription:
    """Shard-channel subscriptions across a cluster's masters, behind ``subscribe``/``unsubscribe``/``get_message``.

    Args:
        client: the cluster client (its slot map routes channels; its nodes' settings make the connections).
        resubscribed: called after channels were subscribed again on a new connection or a new owner: messages
            sent to them meanwhile were lost.
    """

    def __init__(self, client: RedisCluster, resubscribed: Callable[[], None]) -> None:
        self._client = client
        self._resubscribed = resubscribed
        self._owners: dict[bytes, str] = {}
        """Every channel subscribed and not unsubscribed -> the name of the master holding its subscription."""
        self._shards: dict[str, _Shard] = {}
        self._messages: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._moved: set[bytes] = set()
        self._recovery_needed = asyncio.Event()
        self._recovery: asyncio.Task[None] | None = None

    async def subscribe(self, *channels: bytes) -> None:
        """Subscribes ``channels`` and waits until each master confirmed its part.

        Raises:
            RedisError, RedisClusterException, OSError: a channel could not be subscribed (others may have been;
                unsubscribe them to leave nothing behind).
        """
        if self._recovery is None:
            self._recovery = asyncio.create_task(self._recover(), name="shard-subscriptions")
        async with self._lock:
            await self._subscribe(channels)

    async def unsubscribe(self, *channels: bytes) -> None:
        """Unsubscribes ``channels`` (not waiting for the confirmations)."""
        async with self._lock:
            by_shard: dict[str, list[bytes]] = defaultdict(list)
            for channel in channels:
                self._moved.discard(channel)
                owner = self._owners.pop(channel, None)
                if owner is not None and owner in self._shards and not self._shards[owner].broken:
                    by_shard[owner].append(channel)
            for owner, owned in by_shard.items():
                shard = self._shards[owner]
                try:
                    await shard.unsubscribe(owned)
                except _Failure as exc:
                    # Its reader fails too and drops the shard; nothing is subscribed on a dead connection.
                    _log.warning("shard unsubscribe failed on %s: %r", owner, exc)

    async def get_message(
        self,
        ignore_subscribe_messages: bool = True,
        timeout: float = 1.0,  # noqa: ASYNC109 -- PubSub.get_message's signature, which the hub calls
    ) -> dict[str, Any] | None:
        """The next message as ``{"type": "message", "channel": ..., "data": ...}``, or None after ``timeout`` s.

        Subscription confirmations are never returned (the argument exists for ``PubSub`` compatibility).
        """
        try:
            async with asyncio.timeout(timeout):
                channel, data = await self._messages.get()
        except TimeoutError:
            return None
        return {"type": "message", "channel": channel, "data": data}

    async def aclose(self) -> None:
        """Stops the recovery and every reader and closes the connections."""
        if self._recovery is not None:
            await cancel_and_wait([self._recovery])
        for shard in self._shards.values():
            await shard.close()
        self._shards.clear()
        self._owners.clear()

    async def _subscribe(self, channels: Iterable[bytes]) -> None:
        """Subscribes ``channels`` on their owners; the lock is held. Refreshes the slot map and tries once more
        when an owner refused (MOVED: the map was stale) or could not be reached."""
        pending = list(dict.fromkeys(channels))
        await self._client.initialize()  # the slot map, on a client that has not sent a command yet
        for attempt in range(2):
            failed, error = await self._subscribe_once(pending)
            if not failed:
                return
            if attempt == 0:
                await self._client.nodes_manager.initialize()
                pending = failed
        assert error is not None
        raise error

    async def _subscribe_once(self, channels: list[bytes]) -> tuple[list[bytes], BaseException | None]:
        """One attempt: returns the channels that failed and the first error."""
        by_node: dict[str, tuple[ClusterNode, list[bytes]]] = {}
        failed: list[bytes] = []
        error: BaseException | None = None
        for channel in channels:
            try:
                node = self._client.nodes_manager.get_node_from_slot(key_slot(channel))
            except _Failure as exc:
                failed.append(channel)
                error = error or exc
                continue
            by_node.setdefault(node.name, (node, []))[1].append(channel)
        for name, (node, owned) in by_node.items():
            try:
                shard = self._shards.get(name)
                if shard is None or shard.broken:
                    if shard is not None:
                        await shard.close()
                    shard = self._shards[name] = await _Shard.open(node, self._messages.put_nowait, self._lost)
                await shard.subscribe(owned)
            except _Failure as exc:
                failed += owned
                error = error or exc
                continue
            for channel in owned:
                self._owners[channel] = name
        return failed, error

    def _lost(self, channels: Iterable[bytes]) -> None:
        """A reader lost its connection, or Redis dropped subscriptions whose slots moved: subscribe them again."""
        self._moved.update(channels)
        self._recovery_needed.set()

    async def _recover(self) -> None:
        attempt = 0
        while True:
            await self._recovery_needed.wait()
            self._recovery_needed.clear()
            async with self._lock:
                moved = [channel for channel in self._moved if channel in self._owners]
                self._moved.clear()
                if not moved:
                    continue
                try:
                    await self._client.nodes_manager.initialize()
                    await self._subscribe(moved)
                except _Failure as exc:
                    _log.warning("%d shard channels not subscribed again yet: %r", len(moved), exc)
                    self._moved.update(moved)
                    failed = True
                else:
                    failed = False
            if failed:
                await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
                self._recovery_needed.set()
            else:
                attempt = 0
                _log.info("%d shard channels subscribed again", len(moved))
                self._resubscribed()


class _Shard:
    """The subscriber connection to one master and its reader task.

    Replies come in the order of the commands: each SSUBSCRIBE is answered by one ``ssubscribe`` per channel or by
    one error. A ``sunsubscribe`` not answering our SUNSUBSCRIBE means Redis dropped the subscription (its slot
    moved away from this node).
    """

    def __init__(
        self,
        node: ClusterNode,
        connection: AbstractConnection,
        deliver: Callable[[tuple[bytes, bytes]], None],
        lost: Callable[[Iterable[bytes]], None],
    ) -> None:
        self.name = node.name
        self._connection = connection
        self._deliver = deliver
        self._lost = lost
        self._timeout_s = float(node.connection_kwargs.get("socket_timeout") or 1.0)
        self._subscribed: set[bytes] = set()
        self._confirming: deque[tuple[set[bytes], asyncio.Future[None]]] = deque()
        self._unsubscribing: Counter[bytes] = Counter()
        self.broken = False
        self._reader = asyncio.create_task(self._read(), name=f"shard-subscriber-{node.name}")

    @classmethod
    async def open(
        cls,
        node: ClusterNode,
        deliver: Callable[[tuple[bytes, bytes]], None],
        lost: Callable[[Iterable[bytes]], None],
    ) -> _Shard:
        """Connects to ``node`` and starts reading.

        Raises:
            RedisError, OSError: the node could not be reached.
        """
        # RESP2, so messages come back as replies rather than as RESP3 pushes for a handler; no health check,
        # because its PING would read a reply the reader task is waiting for.
        settings = {**node.connection_kwargs, "protocol": 2, "health_check_interval": 0}
        connection = node.connection_class(**settings)
        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        return cls(node, connection, deliver, lost)

    async def subscribe(self, channels: list[bytes]) -> None:
        """SSUBSCRIBE per slot, all written at once; returns when all are confirmed.

        Raises:
            RedisError, OSError: refused (MOVED, CLUSTERDOWN), the connection broke, or no answer in time.
        """
        futures = []
        commands: list[list[bytes | str]] = []
        for owned in _by_slot(channels).values():
            future = asyncio.get_running_loop().create_future()
            self._confirming.append((set(owned), future))
            futures.append(future)
            commands.append(["SSUBSCRIBE", *owned])
        try:
            await self._connection.send_packed_command(self._connection.pack_commands(commands))
            async with asyncio.timeout(self._timeout_s):
                for future in futures:
                    await asyncio.shield(future)
        except BaseException:
            # Replies still to come find their futures done and are dropped; errors already set are retrieved
            # here, so none is reported as lost.
            for future in futures:
                if future.done() and not future.cancelled():
                    future.exception()
                future.cancel()
            raise
        self._subscribed.update(channels)

    async def unsubscribe(self, channels: list[bytes]) -> None:
        """SUNSUBSCRIBE per slot, written at once; the replies are matched by the reader."""
        for channel in channels:
            self._subscribed.discard(channel)
            self._unsubscribing[channel] += 1
        commands: list[list[bytes | str]] = [["SUNSUBSCRIBE", *owned] for owned in _by_slot(channels).values()]
        await self._connection.send_packed_command(self._connection.pack_commands(commands))

    async def close(self) -> None:
        """Stops the reader and closes the connection."""
        self.broken = True
        await cancel_and_wait([self._reader])
        with contextlib.suppress(Exception):
            await self._connection.disconnect()

    async def _read(self) -> None:
        try:
            while True:
                try:
                    reply = await self._connection.read_response(timeout=math.inf)
                except ResponseError as exc:
                    # An error reply answers the oldest SSUBSCRIBE waiting (the connection stays usable).
                    if self._confirming:
                        _, future = self._confirming.popleft()
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self._handle(reply)
        except _Failure as exc:
            _log.warning("shard subscriber %s lost: %r", self.name, exc)
            self.broken = True
            error = RedisError(f"shard subscriber {self.name} lost: {exc!r}")
            while self._confirming:
                _, future = self._confirming.popleft()
                if not future.done():
                    future.set_exception(error)
            self._lost(self._subscribed)

    def _handle(self, reply: list[Any]) -> None:
        kind, channel = reply[0], reply[1]
        if kind == b"smessage":
            self._deliver((channel, reply[2]))
        elif kind == b"ssubscribe":
            if self._confirming:
                waiting, future = self._confirming[0]
                waiting.discard(channel)
                if not waiting:
                    self._confirming.popleft()
                    if not future.done():
                        future.set_result(None)
        elif kind == b"sunsubscribe":
            if self._unsubscribing[channel]:
                self._unsubscribing[channel] -= 1
                if not self._unsubscribing[channel]:
                    del self._unsubscribing[channel]
            elif channel in self._subscribed:
                self._subscribed.discard(channel)
                self._lost([channel])


def _by_slot(channels: Iterable[bytes]) -> dict[int, list[bytes]]:
    """Channels grouped by hash slot (an SSUBSCRIBE or SUNSUBSCRIBE may name one slot's channels only)."""
    groups: dict[int, list[bytes]] = defaultdict(list)
    for channel in channels:
        groups[key_slot(channel)].append(channel)
    return groups
