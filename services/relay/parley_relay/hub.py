"""Wakes the streams this replica serves when their mailboxes grow, and keeps their devices marked present.

Each replica keeps one Redis pub/sub connection subscribed to the hint channels of the devices it streams to. A
hint only says "look at your mailbox" (the mailbox is the truth). Redis drops hints only with the subscriber's
connection, so after every reconnect all streams are woken to re-read their mailboxes; a stream also re-reads
its mailbox every ``poll_interval_s`` as a safety net, so nothing waits forever even if a hint went missing some
other way. Ephemeral stanzas (typing) travel in the hint itself and are never stored.

Presence (which replica streams to a device, so acceptance can tell offline devices apart) is marked when a
device's first stream opens, cleared when its last closes, and refreshed for all devices at once by one task,
so an idle stream costs no task and no Redis command of its own.

The subscription is one connection shared by every stream, so only the dispatcher task reads it and only the
writer task writes it (SUBSCRIBE, UNSUBSCRIBE, queued by the streams and sent in batches). A stream never writes
itself: redis-py drops a connection whose command was cancelled mid-write, and a stream's task is cancelled
whenever its client goes away, which used to cut every stream's subscription at once in bursts of closing
streams (and fail the next write with "'NoneType' object has no attribute 'writelines'"). The connection is set
up at start, before any stream, because redis-py reads a health check reply when it sends the first SUBSCRIBE,
which would race the dispatcher's read. A stream's registration is all or nothing: if its device cannot be
subscribed and marked present, the stream fails and leaves nothing behind (no listener, no presence refresh).

On a Redis Cluster the same writer and dispatcher drive a
:class:`~parley_runtime.sharded_pubsub.ShardedSubscription` instead: hints are shard messages (SSUBSCRIBE,
SPUBLISH), one connection per master, and a stream's SSUBSCRIBE counts only once its master confirmed it. When a
failover moves a shard, the subscription moves its channels to the new master and wakes all streams, as after a
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from parley_relay.store import EPHEMERAL_PREFIX, MailboxStore
from parley_runtime import redis_keys
from parley_runtime.background import cancel_and_wait
from parley_runtime.redis_client import Redis
from parley_runtime.sharded_pubsub import ShardedSubscription

_log = logging.getLogger(__name__)

_EPHEMERAL_QUEUE = 64
_WRITE_BATCH = 500
"""Most channels one SUBSCRIBE or UNSUBSCRIBE names (a burst of streams opening at once is one command)."""


class WakeFlag:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait`` for a single waiter, the stream it belongs to.

    An Event holds a deque for any number of waiters (about 0.7 KiB, kept for as long as the stream is open); one
    waiter needs only a future while it waits.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    def set(self) -> None:
        """Sets the flag and wakes the waiter."""
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        """Clears the flag."""
        self._set = False

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Waits until the flag is set or ``timeout_s`` passed; returns whether it is set.

        Raises:
            RuntimeError: another task is already waiting.
        """
        if self._set:
            return True
        if self._waiter is not None:
            raise RuntimeError("a wake flag has one waiter")
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout_s is None else loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self._set


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Listener:
    """What one device stream waits on: a wake-up flag, whether its mailbox may have grown since the stream last
    read it (``hinted``), and a bounded backlog of ephemeral stanzas."""

    __slots__ = ("_ephemeral", "hinted", "wake")

    def __init__(self) -> None:
        self.wake = WakeFlag()
        # Set by a mailbox hint, and whenever hints may have been lost (a start, a reconnect, the safety-net poll):
        # a stream that has read everything reads again only then, not on every wake-up (acks, replies).
        self.hinted = True
        # Created on the first typing state: most streams never see one, and an idle stream should cost little.
        self._ephemeral: deque[bytes] | None = None

    def notify(self, data: bytes) -> None:
        """Handles one channel message."""
        if data.startswith(EPHEMERAL_PREFIX):
            if self._ephemeral is None:
                self._ephemeral = deque(maxlen=_EPHEMERAL_QUEUE)
            # Typing states are best effort: a stream too slow to take them loses the oldest, never blocks.
            self._ephemeral.append(data[len(EPHEMERAL_PREFIX) :])
        else:
            self.hinted = True
        self.wake.set()

    def take_ephemeral(self) -> list[bytes]:
        """The ephemeral stanzas received since the last call, oldest first."""
        if not self._ephemeral:
            return []
        taken = list(self._ephemeral)
        self._ephemeral.clear()
        return taken


class _Subscription(PubSub):
    """The replica's pub/sub connection. Hints published while it was down are lost, so every (re)connect, after
    redis-py has subscribed the channels again, wakes all streams to re-read their mailboxes."""

    def __init__(self, client: aioredis.Redis, connected: Callable[[], None]) -> None:
        super().__init__(client.connection_pool)
        self._connected = connected

    async def on_connect(self, connection: Connection) -> None:
        """Subscribes again, then wakes the streams."""
        await super().on_connect(connection)
        self._connected()


class MailboxHub:
    """The replica's pub/sub subscription and presence marks, shared by its device streams.

    Args:
        client: Redis client (one connection from its pool is held for pub/sub).
        store: where presence is marked.
        replica: this replica's name, the value of its presence marks.
        presence_ttl_ms: lifetime of a presence mark; refreshed every third of it.
    """

    def __init__(self, client: Redis, store: MailboxStore, *, replica: str, presence_ttl_ms: int = 30_000) -> None:
        self._client = client
        self._store = store
        self._replica = replica
        self._presence_ttl_ms = presence_ttl_ms
        # On a cluster, hints are shard messages (SPUBLISH reaches one shard, PUBLISH every node): one subscriber
        # connection per master, which the sharded subscription keeps following failovers.
        self._pubsub: _Subscription | ShardedSubscription = (
            ShardedSubscription(client, self.wake_all)
            if isinstance(client, RedisCluster)
            else _Subscription(client, self.wake_all)
        )
        # A list rather than a set: a device has one stream or a few, and an empty set alone takes 0.2 KiB.
        self._listeners: dict[bytes, list[Listener]] = {}
        self._devices: dict[bytes, tuple[str, int]] = {}
        # Device channels whose first stream is subscribing them: the outcome (True once subscribed and marked
        # present), awaited by the device's other streams opening meanwhile. A failure stays until the last leaves.
        self._subscribing: dict[bytes, asyncio.Future[bool]] = {}
        self._writes: asyncio.Queue[tuple[str, bytes, asyncio.Future[None] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Sets up the subscription, then starts dispatching hints and refreshing presence.

        Raises:
            RedisError: Redis is unreachable.
        """
        await self._pubsub.subscribe(redis_keys.replica_channel(self._replica).encode())
        self._tasks = [
            asyncio.create_task(self._write(), name="mailbox-subscriptions"),
            asyncio.create_task(self._dispatch(), name="mailbox-hints"),
            asyncio.create_task(self._refresh_presence(), name="presence"),
        ]

    async def stop(self) -> None:
        """Stops dispatching and closes the subscription."""
        await cancel_and_wait(self._tasks)
        await self._pubsub.aclose()

    async def register(self, user: str, device_id: int) -> Listener:
        """Subscribes a new stream of the device and marks the device present here, or leaves nothing behind.

        Raises:
            RedisError, OSError: the device could not be subscribed or marked present (the stream must fail).
        """
        channel = redis_keys.mailbox_channel(user, device_id).encode()
        listener = Listener()
        listeners = self._listeners.get(channel)
        try:
            if listeners is None:
                self._listeners[channel] = [listener]
                await self._subscribe(channel, user, device_id)
            else:
                listeners.append(listener)
                # Another stream of the device may still be subscribing it; this one stands or falls with it.
                subscribing = self._subscribing.get(channel)
                if subscribing is not None and not await asyncio.shield(subscribing):
                    raise RedisError("the device's subscription failed")
        except BaseException:
            await self.unregister(user, device_id, listener)
            raise
        return listener

    async def _subscribe(self, channel: bytes, user: str, device_id: int) -> None:
        """Subscribes the device's channel and marks the device present, for its first stream."""
        loop = asyncio.get_running_loop()
        subscribing = self._subscribing[channel] = loop.create_future()
        self._devices[channel] = (user, device_id)
        try:
            subscribed = loop.create_future()
            self._writes.put_nowait(("subscribe", channel, subscribed))
            await asyncio.shield(subscribed)
            await self._store.mark_present([(user, device_id)], self._replica, self._presence_ttl_ms)
        except BaseException:
            # Kept until the device's last stream has left, so that streams opening meanwhile fail too.
            subscribing.set_result(False)
            raise
        subscribing.set_result(True)
        # Done: later streams of the device find no entry and go on at once; the device costs no entry of its own.
        del self._subscribing[channel]

    async def unregister(self, user: str, device_id: int, listener: Listener) -> None:
        """Forgets a closed stream of the device; the last one clears the device's presence."""
        channel = redis_keys.mailbox_channel(user, device_id).encode()
        listeners = self._listeners.get(channel)
        if listeners is None or listener not in listeners:
            return
        listeners.remove(listener)
        if not listeners:
            del self._listeners[channel]
            self._devices.pop(channel, None)
            self._subscribing.pop(channel, None)
            self._writes.put_nowait(("unsubscribe", channel, None))
            with contextlib.suppress(RedisError, OSError):
                # Shielded: a stream closing because its client left is cancelled, and the mark must still go.
                await asyncio.shield(self._store.mark_absent(user, device_id, self._replica))

    def wake_all(self) -> None:
        """Wakes every stream: hints may have been lost."""
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.hinted = True
                listener.wake.set()

    def wake_provider(self, provider_id: str | None) -> None:
        """Wakes the streams of ``provider_id``'s devices (every stream for None), so they re-check its status."""
        if provider_id is None:
            self.wake_all()
            return
        suffix = f"@{provider_id}"
        for channel, (user, _) in self._devices.items():
            if user.endswith(suffix):
                for listener in self._listeners.get(channel, ()):
                    listener.wake.set()

    async def _refresh_presence(self) -> None:
        while True:
            await asyncio.sleep(self._presence_ttl_ms / 3000)
            try:
                await self._store.mark_present(list(self._devices.values()), self._replica, self._presence_ttl_ms)
            except (RedisError, OSError) as exc:
                # Marks expiring only make acceptance announce devices as offline (a spare wake-up), never lose.
                _log.warning("presence refresh failed: %s", exc)

    async def _write(self) -> None:
        """Sends the queued (un)subscriptions, consecutive ones of a kind as one command, in queue order."""
        while True:
            batch = [await self._writes.get()]
            while not self._writes.empty() and len(batch) < _WRITE_BATCH:
                batch.append(self._writes.get_nowait())
            for kind, group in itertools.groupby(batch, key=lambda write: write[0]):
                writes = list(group)
                command = self._pubsub.subscribe if kind == "subscribe" else self._pubsub.unsubscribe
                error: BaseException | None = None
                try:
                    await command(*(channel for _, channel, _ in writes))
                except Exception as exc:  # whatever broke a write fails its streams, never the writer
                    # The dispatcher's read fails too and queues every channel again once reconnected.
                    _log.warning("mailbox %s failed: %r", kind, exc, exc_info=True)
                    error = exc
                for _, _, done in writes:
                    if done is not None and not done.done():
                        if error is None:
                            done.set_result(None)
                        else:
                            done.set_exception(error)

    async def _dispatch(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                _log.warning("mailbox hints interrupted: %s", exc)
                # Streams keep polling their mailboxes meanwhile; resubscribe everything on the new connection.
                await asyncio.sleep(0.5)
                for channel in [redis_keys.replica_channel(self._replica).encode(), *self._listeners]:
                    self._writes.put_nowait(("subscribe", channel, None))
                continue
            if message is None or message.get("type") != "message":
                continue
            for listener in list(self._listeners.get(message["channel"], ())):
                listener.notify(message["data"])
