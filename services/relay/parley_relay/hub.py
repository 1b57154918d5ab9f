"""Wakes the streams this replica serves when their mailboxes grow, wherever the stanza was accepted.

Each replica keeps one Redis pub/sub connection subscribed to the hint channels of the devices it streams to. A
hint only says "look at your mailbox" (the mailbox is the truth), so a hint lost while pub/sub reconnects costs
latency, not messages: every stream also re-reads its mailbox every ``poll_interval_s``. Ephemeral stanzas
(typing) travel in the hint itself and are never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.exceptions import RedisError

from parley_relay.store import EPHEMERAL_PREFIX
from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis

_log = logging.getLogger(__name__)

_EPHEMERAL_QUEUE = 64


class Listener:
    """What one device stream waits on: a wake-up flag and a bounded queue of ephemeral stanzas."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.ephemeral: asyncio.Queue[bytes] = asyncio.Queue(_EPHEMERAL_QUEUE)

    def notify(self, data: bytes) -> None:
        """Handles one channel message."""
        if data.startswith(EPHEMERAL_PREFIX):
            # Typing indicators are best effort: a stream too slow to take them loses them, never blocks.
            with contextlib.suppress(asyncio.QueueFull):
                self.ephemeral.put_nowait(data[len(EPHEMERAL_PREFIX) :])
        self.wake.set()


class MailboxHub:
    """The replica's pub/sub subscription, shared by its device streams.

    Args:
        client: Redis client (one connection from its pool is held for pub/sub).
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pubsub = client.pubsub()
        self._listeners: dict[bytes, set[Listener]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts dispatching hints."""
        self._task = asyncio.create_task(self._dispatch(), name="mailbox-hints")

    async def stop(self) -> None:
        """Stops dispatching and closes the subscription."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def register(self, user: str, device_id: int) -> Listener:
        """Subscribes a new stream of the device."""
        channel = redis_keys.mailbox_channel(user, device_id).encode()
        listener = Listener()
        first = not self._listeners[channel]
        self._listeners[channel].add(listener)
        if first:
            await self._pubsub.subscribe(channel)
        return listener

    async def unregister(self, user: str, device_id: int, listener: Listener) -> None:
        """Forgets a closed stream of the device."""
        channel = redis_keys.mailbox_channel(user, device_id).encode()
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[channel]
            with contextlib.suppress(RedisError):
                await self._pubsub.unsubscribe(channel)

    async def _dispatch(self) -> None:
        while True:
            if not self._listeners:
                await asyncio.sleep(0.05)
                continue
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                _log.warning("mailbox hints interrupted: %s", exc)
                # Streams keep polling their mailboxes meanwhile; resubscribe everything on the new connection.
                await asyncio.sleep(0.5)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(*self._listeners)
                continue
            if message is None or message.get("type") != "message":
                continue
            for listener in list(self._listeners.get(message["channel"], ())):
                listener.notify(message["data"])
