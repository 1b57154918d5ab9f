"""The identity service's own view of providers, kept current across replicas by Redis pub/sub.

Every provider write announces the provider id on ``redis_keys.PROVIDER_CHANGES_CHANNEL`` (in the same script as
the write). Each identity replica re-reads announced providers, updates its cache (used by its own
authentication) and forwards the change to its ``WatchProviders`` streams, which feed every other service. A full
reload runs at start, after any pub/sub reconnect, and every ``resync_s`` seconds as a backstop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

from redis.exceptions import RedisError

from parley.identity.v1.identity_pb2 import Provider
from parley_identity.store import IdentityStore
from parley_runtime import redis_keys
from parley_runtime.background import cancel_and_wait
from parley_runtime.providers import ProviderCache
from parley_runtime.redis_client import Redis

_log = logging.getLogger(__name__)

_WATCH_QUEUE_SIZE = 1024


class IdentityProviderDirectory(ProviderCache):
    """Provider cache of an identity replica, with watchers for ``WatchProviders``.

    Args:
        store: identity storage.
        client: Redis client for the pub/sub subscription.
        resync_s: period of the backstop full reload.
    """

    def __init__(self, store: IdentityStore, client: Redis, *, resync_s: float = 30.0) -> None:
        super().__init__()
        self._store = store
        self._client = client
        self._resync_s = resync_s
        self._watchers: set[asyncio.Queue[tuple[bool, list[Provider]]]] = set()
        self._task: asyncio.Task[None] | None = None
        # The full messages, for watcher snapshots (the base class keeps the authentication view).
        self._latest: dict[str, Provider] = {}

    def replace_all(self, providers: Iterable[Provider]) -> None:
        """Replaces the whole cache."""
        self._latest = {provider.provider_id: provider for provider in providers}
        super().replace_all(self._latest.values())

    def put(self, provider: Provider) -> None:
        """Inserts or replaces one provider."""
        self._latest[provider.provider_id] = provider
        super().put(provider)

    async def start(self) -> None:
        """Loads every provider, then follows changes in the background."""
        await self.reload()
        self._task = asyncio.create_task(self._follow(), name="provider-changes")

    async def stop(self) -> None:
        """Stops following changes."""
        await cancel_and_wait([self._task])

    async def reload(self) -> None:
        """Replaces the cache with storage's providers and sends every watcher a snapshot."""
        providers = await self._store.get_providers(await self._store.list_provider_ids())
        self.replace_all(providers)
        self._broadcast(True, providers)

    async def refresh(self, provider_id: str) -> None:
        """Re-reads one provider after a change and forwards it to watchers."""
        stored = await self._store.get_provider(provider_id)
        if stored is None:
            return
        self.put(stored.provider)
        self._broadcast(False, [stored.provider])

    async def watch(self) -> AsyncIterator[tuple[bool, list[Provider]]]:
        """Yields ``(snapshot, providers)``: first a snapshot, then each change, until cancelled."""
        queue: asyncio.Queue[tuple[bool, list[Provider]]] = asyncio.Queue(_WATCH_QUEUE_SIZE)
        self._watchers.add(queue)
        try:
            yield True, self._snapshot()
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    def _broadcast(self, snapshot: bool, providers: list[Provider]) -> None:
        for queue in list(self._watchers):
            try:
                queue.put_nowait((snapshot, providers))
            except asyncio.QueueFull:
                # A watcher this far behind gets a fresh snapshot instead of an unbounded backlog.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait((True, self._snapshot()))

    def _snapshot(self) -> list[Provider]:
        return list(self._latest.values())

    async def _follow(self) -> None:
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(redis_keys.PROVIDER_CHANGES_CHANNEL)
                    # Changes made while we were not subscribed are caught by this reload.
                    await self.reload()
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._resync_s)
                        if message is None:
                            await self.reload()
                        elif message["type"] == "message":
                            await self.refresh(message["data"].decode())
            except (RedisError, OSError) as exc:
                _log.warning("provider change feed interrupted: %s", exc)
                await asyncio.sleep(0.5)
