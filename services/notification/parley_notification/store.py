"""Notification state: the :class:`NotificationStore` protocol and its Redis implementation.

Webhooks live in the provider's ``webhook:{<provider>}`` slot, push tokens in the user's ``push:{<user>}`` slot,
and the delivery queue (schedule, deliveries, coalescing windows, dead letters, notices) in the ``{queue}``
slot, where every multi-step change is one of the Lua scripts in ``lua/`` (their headers document KEYS and
ARGV). The event streams are read through consumer groups.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from redis.exceptions import ResponseError

from parley_notification.model import Claim, DeadLetter, Delivery, RoutedEvent, Webhook
from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis, is_cluster, load_script

QUEUED_NOW = 1
"""``take_events`` outcome: the delivery is due at once."""
QUEUED_TRAILING = 2
"""``take_events`` outcome: the delivery is the trailing wake-up of its device's coalescing window."""
MERGED = 3
"""``take_events`` outcome: the delivery was merged into its device's pending trailing wake-up."""

_T = TypeVar("_T")

StreamEntry = tuple[str, dict[bytes, bytes]]
"""A stream entry: its id and its fields."""


class DeadLetterMissingError(Exception):
    """A strict redrive named a dead letter that does not exist; ``index`` is its position (from 0)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"dead letter {index} not found")
        self.index = index


class NotificationStore(Protocol):
    """Storage of webhooks, push targets, the delivery queue and notices."""

    async def set_webhook(self, provider_id: str, webhook: Webhook, now_ms: int) -> None:
        """Registers or replaces the provider's webhook."""

    async def webhook(self, provider_id: str) -> Webhook | None:
        """The provider's webhook, or None."""

    async def providers_with_webhooks(self, provider_ids: Sequence[str]) -> list[str]:
        """The given providers that registered a webhook, in the given order."""

    async def set_push_token(self, user: str, device_id: int, token: str) -> None:
        """Registers or replaces one device's push token."""

    async def push_token(self, user: str, device_id: int) -> str:
        """The device's push token, or "" when none is registered."""

    async def push_tokens(self, devices: Sequence[tuple[str, int]]) -> list[str]:
        """The push tokens of (user, device id) pairs, in order ("" where none is registered), in one round trip."""

    async def forget_push_token(self, user: str, device_id: int) -> None:
        """Drops one device's push token (idempotent)."""

    async def take_events(
        self,
        events: Sequence[RoutedEvent],
        *,
        now_ms: int,
        seen_ttl_ms: int,
        coalesce_window_ms: int,
        notices_maxlen: int,
    ) -> list[list[int] | None]:
        """Queues each event's deliveries and notices once, in one atomic step.

        Returns:
            Per event: None when it was taken in before, else per delivery QUEUED_NOW, QUEUED_TRAILING or MERGED.
        """

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> Claim:
        """Leases up to ``limit`` due deliveries for one attempt each, and says when the next one is due."""

    async def finish(self, delivery_ids: Sequence[str]) -> list[bool]:
        """Ends accepted deliveries; per delivery, False when it was already ended."""

    async def retry(self, delivery_id: str, attempt: int, due_ms: int, error: str) -> bool:
        """Schedules the next attempt; False when the delivery is gone or was claimed again."""

    async def dead_letter(self, delivery: Delivery, error: str, now_ms: int, maxlen: int) -> str:
        """Moves the delivery to the dead letters; returns the entry id ("" when claimed again or gone)."""

    async def dead_letters(self, after: str, count: int) -> list[DeadLetter]:
        """Dead letters after entry id ``after`` ("" for the start), oldest first."""

    async def redrive(self, dead_letter_ids: Sequence[str], *, strict: bool, now_ms: int) -> int:
        """Queues dead letters again.

        Raises:
            DeadLetterMissingError: ``strict`` and an id is unknown; nothing was changed.
        """

    async def queue_depth(self) -> dict[str, int]:
        """Deliveries queued (scheduled or in flight) per provider."""

    async def ensure_group(self, stream: str, group: str) -> None:
        """Creates the consumer group (and the stream) unless it exists; new groups start at the beginning."""

    async def read_group(
        self, stream: str, group: str, consumer: str, count: int, block_ms: int, *, pending: bool = False
    ) -> list[StreamEntry]:
        """New entries for this consumer (XREADGROUP ``>``), waiting up to ``block_ms``; with ``pending``, the
        entries it read before and has not acknowledged (XREADGROUP ``0``), without waiting."""

    async def reclaim(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Entries pending longer than ``min_idle_ms`` for any consumer, now this consumer's (XAUTOCLAIM)."""

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Acknowledges entries."""

    async def forget_consumers(self, stream: str, group: str, idle_ms: int) -> list[str]:
        """Removes consumers idle longer than ``idle_ms`` with nothing pending; returns their names."""

    async def last_notice_id(self) -> str:
        """The id of the newest notice ("0-0" when there is none)."""

    async def read_notices(self, after: str, count: int, block_ms: int) -> list[StreamEntry]:
        """Notices after entry id ``after``, waiting up to ``block_ms`` for one."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[StreamEntry]:
    return [(_text(entry_id), fields) for entry_id, fields in raw or () if fields is not None]


class RedisNotificationStore:
    """:class:`NotificationStore` on Redis.

    Webhooks are read on every delivery and change rarely, so each replica may keep one it found for
    ``webhook_cache_s``: a re-registration made through another replica reaches this one within that time (until
    then its deliveries still go to the old URL, signed with the old secret).

    Args:
        client: Redis client.
        notice_client: a client for the blocking notice reads (its own pool, so a watcher never waits for a
            connection the queue needs); defaults to ``client``.
        webhook_cache_s: how long a webhook read is reused; 0 reads Redis every time.
        max_commands: commands in flight at once on ``client``; keep it below the client's pool size (redis-py
            refuses a command when its pool is exhausted, and bursts of attempts and events would exhaust it).
        clock: monotonic seconds, for the cache.
    """

    def __init__(
        self,
        client: Redis,
        notice_client: Redis | None = None,
        *,
        webhook_cache_s: float = 0.0,
        max_commands: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._notice_client = notice_client or client
        self._webhook_cache_s = webhook_cache_s
        self._clock = clock
        self._webhooks: dict[str, tuple[float, Webhook]] = {}
        self._webhook_reads: dict[str, asyncio.Future[Webhook | None]] = {}
        self._slots = asyncio.Semaphore(max_commands)
        self._take_events = load_script(client, "parley_notification", "take_events")
        self._claim_due = load_script(client, "parley_notification", "claim_due")
        self._finish = load_script(client, "parley_notification", "finish_deliveries")
        self._retry = load_script(client, "parley_notification", "retry_delivery")
        self._dead_letter = load_script(client, "parley_notification", "dead_letter")
        self._redrive = load_script(client, "parley_notification", "redrive")
        self._forget_consumers = load_script(client, "parley_notification", "forget_consumers")
        self._push_tokens = load_script(client, "parley_notification", "push_tokens")
        self._cluster = is_cluster(client)
        self._delivery_prefix = redis_keys.notify_delivery("")

    async def _bounded(self, command: Awaitable[_T]) -> _T:
        # A redis-py command takes a pool connection only when awaited, so waiting here bounds the connections.
        async with self._slots:
            return await command

    async def set_webhook(self, provider_id: str, webhook: Webhook, now_ms: int) -> None:
        await self._bounded(
            self._client.hset(
                redis_keys.webhook(provider_id),
                mapping={"url": webhook.url, "secret": webhook.secret, "registered_at_ms": now_ms},
            )
        )
        self._webhooks.pop(provider_id, None)

    async def webhook(self, provider_id: str) -> Webhook | None:
        cached = self._webhooks.get(provider_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        # Every attempt in flight misses the cache in the same instant when it runs out; one read serves them all.
        reading = self._webhook_reads.get(provider_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_webhook(provider_id))
            self._webhook_reads[provider_id] = reading
            reading.add_done_callback(lambda _: self._webhook_reads.pop(provider_id, None))
        return await asyncio.shield(reading)

    async def _read_webhook(self, provider_id: str) -> Webhook | None:
        fields: list[Any] = await self._bounded(self._client.hmget(redis_keys.webhook(provider_id), ["url", "secret"]))
        return self._remember(provider_id, *fields)

    def _remember(self, provider_id: str, url: Any, secret: Any) -> Webhook | None:
        webhook = None if url is None or secret is None else Webhook(url=_text(url), secret=bytes(secret))
        # Only a webhook found is reused: a provider that has just registered is seen at once by every replica.
        if webhook is not None and self._webhook_cache_s > 0:
            self._webhooks[provider_id] = (self._clock() + self._webhook_cache_s, webhook)
        return webhook

    async def providers_with_webhooks(self, provider_ids: Sequence[str]) -> list[str]:
        now = self._clock()
        found: set[str] = set()
        unknown: list[str] = []
        for provider_id in dict.fromkeys(provider_ids):
            cached = self._webhooks.get(provider_id)
            if cached is not None and cached[0] > now:
                found.add(provider_id)
            else:
                unknown.append(provider_id)
        if unknown:
            # One round trip for all of them: a batch of events names the same few providers again and again.
            async with self._client.pipeline(transaction=False) as pipe:
                for provider_id in unknown:
                    pipe.hmget(redis_keys.webhook(provider_id), ["url", "secret"])
                replies: list[Any] = await self._bounded(pipe.execute())
            for provider_id, (url, secret) in zip(unknown, replies, strict=True):
                if self._remember(provider_id, url, secret) is not None:
                    found.add(provider_id)
        return [provider_id for provider_id in provider_ids if provider_id in found]

    async def set_push_token(self, user: str, device_id: int, token: str) -> None:
        await self._bounded(self._client.hset(redis_keys.push_targets(user), str(device_id), token))

    async def push_token(self, user: str, device_id: int) -> str:
        token = await self._bounded(self._client.hget(redis_keys.push_targets(user), str(device_id)))
        return "" if token is None else _text(token)

    async def push_tokens(self, devices: Sequence[tuple[str, int]]) -> list[str]:
        if not devices:
            return []
        tokens: list[Any]
        if self._cluster:
            async with self._client.pipeline(transaction=False) as pipe:
                for user, device_id in devices:
                    pipe.hget(redis_keys.push_targets(user), str(device_id))
                tokens = await self._bounded(pipe.execute())
        else:
            keys = [redis_keys.push_targets(user) for user, _ in devices]
            tokens = await self._bounded(self._push_tokens(keys=keys, args=[device_id for _, device_id in devices]))
        return ["" if token is None else _text(token) for token in tokens]

    async def forget_push_token(self, user: str, device_id: int) -> None:
        await self._bounded(self._client.hdel(redis_keys.push_targets(user), str(device_id)))

    async def take_events(
        self,
        events: Sequence[RoutedEvent],
        *,
        now_ms: int,
        seen_ttl_ms: int,
        coalesce_window_ms: int,
        notices_maxlen: int,
    ) -> list[list[int] | None]:
        keys = [redis_keys.NOTIFY_DUE, redis_keys.NOTIFY_DEPTH, redis_keys.NOTIFY_NOTICES]
        args: list[str | int] = [
            now_ms,
            seen_ttl_ms,
            coalesce_window_ms,
            notices_maxlen,
            self._delivery_prefix,
            len(events),
        ]
        for event in events:
            keys.append(redis_keys.notify_seen(event.event_id))
            args += [len(event.deliveries), len(event.notices)]
            for delivery in event.deliveries:
                keys += [
                    redis_keys.notify_delivery(delivery.delivery_id),
                    redis_keys.notify_wake(delivery.coalesce_key or delivery.delivery_id),
                ]
                args += [
                    delivery.delivery_id,
                    delivery.provider_id,
                    delivery.type,
                    delivery.data,
                    delivery.occurred_at_ms,
                    0 if delivery.coalesce_key is None else 1,
                ]
            for notice in event.notices:
                args += [notice.user, notice.kind, notice.subject, notice.at_ms]
        raw: list[Any] = await self._bounded(self._take_events(keys=keys, args=args))
        outcomes: list[list[int] | None] = []
        index = 0
        for event in events:
            if int(raw[index]) == 0:
                outcomes.append(None)
                index += 1
            else:
                count = len(event.deliveries)
                outcomes.append([int(value) for value in raw[index + 1 : index + 1 + count]])
                index += 1 + count
        return outcomes

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> Claim:
        raw: list[Any] = await self._bounded(
            self._claim_due(keys=[redis_keys.NOTIFY_DUE], args=[now_ms, lease_ms, limit, self._delivery_prefix])
        )
        claimed = []
        for index in range(1, len(raw), 8):
            delivery_id, provider, kind, data, occurred, attempt, coalesced, created = raw[index : index + 8]
            claimed.append(
                Delivery(
                    delivery_id=_text(delivery_id),
                    provider_id=_text(provider),
                    type=_text(kind),
                    data=_text(data),
                    occurred_at_ms=int(occurred),
                    attempt=int(attempt),
                    coalesced=int(coalesced),
                    created_at_ms=int(created),
                )
            )
        # Scores come back as Redis formats doubles; every score here is a whole number of milliseconds.
        return Claim(claimed, int(float(raw[0])) if raw[0] else None)

    async def finish(self, delivery_ids: Sequence[str]) -> list[bool]:
        keys = [redis_keys.NOTIFY_DUE, redis_keys.NOTIFY_DEPTH]
        ended: list[Any] = await self._bounded(self._finish(keys=keys, args=[self._delivery_prefix, *delivery_ids]))
        return [bool(flag) for flag in ended]

    async def retry(self, delivery_id: str, attempt: int, due_ms: int, error: str) -> bool:
        keys = [redis_keys.NOTIFY_DUE, redis_keys.notify_delivery(delivery_id)]
        return bool(await self._bounded(self._retry(keys=keys, args=[delivery_id, attempt, due_ms, error])))

    async def dead_letter(self, delivery: Delivery, error: str, now_ms: int, maxlen: int) -> str:
        keys = [
            redis_keys.NOTIFY_DUE,
            redis_keys.NOTIFY_DEPTH,
            redis_keys.NOTIFY_DEAD_LETTERS,
            redis_keys.notify_delivery(delivery.delivery_id),
        ]
        entry = await self._bounded(
            self._dead_letter(keys=keys, args=[delivery.delivery_id, delivery.attempt, error, now_ms, maxlen])
        )
        return _text(entry)

    async def dead_letters(self, after: str, count: int) -> list[DeadLetter]:
        start = f"({after}" if after else "-"
        raw: Any = await self._bounded(
            self._client.xrange(redis_keys.NOTIFY_DEAD_LETTERS, min=start, max="+", count=count)
        )
        letters = []
        for entry_id, fields in _entries(raw):
            letters.append(
                DeadLetter(
                    dead_letter_id=entry_id,
                    delivery_id=_text(fields[b"delivery_id"]),
                    provider_id=_text(fields[b"provider"]),
                    type=_text(fields[b"type"]),
                    attempts=int(fields[b"attempts"]),
                    last_error=_text(fields[b"last_error"]),
                    at_ms=int(fields[b"at_ms"]),
                )
            )
        return letters

    async def redrive(self, dead_letter_ids: Sequence[str], *, strict: bool, now_ms: int) -> int:
        keys = [redis_keys.NOTIFY_DUE, redis_keys.NOTIFY_DEPTH, redis_keys.NOTIFY_DEAD_LETTERS]
        result: list[Any] = await self._bounded(
            self._redrive(keys=keys, args=[now_ms, self._delivery_prefix, "1" if strict else "0", *dead_letter_ids])
        )
        if int(result[0]) < 0:
            raise DeadLetterMissingError(int(result[1]) - 1)
        return int(result[0])

    async def queue_depth(self) -> dict[str, int]:
        raw: dict[Any, Any] = await self._bounded(self._client.hgetall(redis_keys.NOTIFY_DEPTH))
        return {_text(provider): int(count) for provider, count in raw.items()}

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self._bounded(self._client.xgroup_create(stream, group, id="0", mkstream=True))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_group(
        self, stream: str, group: str, consumer: str, count: int, block_ms: int, *, pending: bool = False
    ) -> list[StreamEntry]:
        start, block = ("0", None) if pending else (">", block_ms)
        raw: Any = await self._bounded(
            self._client.xreadgroup(group, consumer, {stream: start}, count=count, block=block)
        )
        return [entry for _, entries in raw or () for entry in _entries(entries)]

    async def reclaim(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        raw: Any = await self._bounded(
            self._client.xautoclaim(stream, group, consumer, min_idle_ms, start_id="0-0", count=count)
        )
        return _entries(raw[1])

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            await self._bounded(self._client.xack(stream, group, *entry_ids))

    async def forget_consumers(self, stream: str, group: str, idle_ms: int) -> list[str]:
        removed: list[Any] = await self._bounded(self._forget_consumers(keys=[stream], args=[group, idle_ms]))
        return [_text(name) for name in removed]

    async def last_notice_id(self) -> str:
        raw: Any = await self._notice_client.xrevrange(redis_keys.NOTIFY_NOTICES, count=1)
        return _text(raw[0][0]) if raw else "0-0"

    async def read_notices(self, after: str, count: int, block_ms: int) -> list[StreamEntry]:
        raw: Any = await self._notice_client.xread({redis_keys.NOTIFY_NOTICES: after}, count=count, block=block_ms)
        return [entry for _, entries in raw or () for entry in _entries(entries)]
