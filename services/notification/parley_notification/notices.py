"""Notices for users' clients: one tail of the notices stream per replica, fanned out to its watchers in memory.

A notice is appended once (by the intake script) whatever the number of watchers; each replica reads the stream
once and hands each notice to the ``WatchNotices`` calls of its user (or of every user, for a new provider), so a
watcher costs no Redis connection. Notices are live: a client that is not watching misses them, which is why each
one also says what to re-read (a provider id, an address, a report id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from parley_notification.background import finish_or_cancel
from parley_notification.model import Notice
from parley_notification.store import NotificationStore

_log = logging.getLogger(__name__)

EVERY_USER = ""
"""The ``user`` of a notice for every user."""


class TooManyWatchersError(Exception):
    """This replica already serves its maximum number of watchers."""


class NoticeHub:
    """Follows the notices stream and serves watchers.

    Args:
        store: the notices stream.
        max_watchers: ``WatchNotices`` calls served at once by this replica.
        queue_size: notices buffered per watcher; a watcher that falls further behind loses the oldest.
        block_ms: how long one read of the stream waits.
    """

    def __init__(self, store: NotificationStore, *, max_watchers: int, queue_size: int = 256, block_ms: int = 1000):
        self._store = store
        self._max_watchers = max_watchers
        self._queue_size = queue_size
        self._block_ms = block_ms
        self._watchers: dict[str, set[asyncio.Queue[Notice]]] = {}
        self._count = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Starts following the stream from its current end."""
        self._task = asyncio.create_task(self._follow(), name="notices")

    async def stop(self) -> None:
        """Stops following after the current read."""
        self._stopping = True
        if self._task is not None:
            await finish_or_cancel([self._task], self._block_ms / 1000 + 2.0)
            self._task = None

    @contextlib.asynccontextmanager
    async def watch(self, user: str) -> AsyncIterator[asyncio.Queue[Notice]]:
        """A queue receiving the user's notices (and every user's) while the context is open.

        Raises:
            TooManyWatchersError: the replica serves its maximum number of watchers.
        """
        if self._count >= self._max_watchers:
            raise TooManyWatchersError
        self._count += 1
        queue: asyncio.Queue[Notice] = asyncio.Queue(self._queue_size)
        try:
            # Notices appended before the hub found the stream's end would be missed; wait until it has.
            await self._ready.wait()
            self._watchers.setdefault(user, set()).add(queue)
            yield queue
        finally:
            self._count -= 1
            watchers = self._watchers.get(user, set())
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(user, None)

    def _dispatch(self, notice: Notice) -> None:
        targets = (
            [queue for queues in self._watchers.values() for queue in queues]
            if notice.user == EVERY_USER
            else self._watchers.get(notice.user, ())
        )
        for queue in targets:
            if queue.full():
                queue.get_nowait()
                _log.warning("a notice watcher fell behind; its oldest notice was dropped")
            queue.put_nowait(notice)

    async def _follow(self) -> None:
        backoff = 0.05
        last = ""
        while not self._stopping:
            try:
                if not last:
                    last = await self._store.last_notice_id()
                    self._ready.set()
                for entry_id, fields in await self._store.read_notices(last, 500, self._block_ms):
                    last = entry_id
                    self._dispatch(
                        Notice(
                            user=fields[b"user"].decode(),
                            kind=fields[b"kind"].decode(),
                            subject=fields[b"subject"].decode(),
                            at_ms=int(fields[b"at_ms"]),
                        )
                    )
                backoff = 0.05
            except RedisError as exc:
                _log.warning("notices stream unavailable: %s; retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                _log.exception("notice dispatch failed; retrying in %.2f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
