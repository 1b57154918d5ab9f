"""Event intake: reads the event streams through a consumer group and queues what each event asks for.

Every replica is one consumer of the group ``notification`` on each ``events:{<domain>}`` stream, so replicas
share the events. An entry is acknowledged only after its deliveries and notices are queued in Redis (one atomic,
idempotent script); a replica that dies before that leaves the entry pending, and any replica claims it again
(XAUTOCLAIM) once it has been idle for ``reclaim_idle_ms``. Taking an event in twice changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry import metrics, propagate, trace
from redis.exceptions import RedisError

from parley.events.v1.events_pb2 import Event
from parley_notification.background import finish_or_cancel
from parley_notification.model import RoutedEvent
from parley_notification.routing import Lookups, Router
from parley_notification.store import MERGED, NotificationStore, StreamEntry

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    """How events are read.

    Attributes:
        streams: the stream keys to consume.
        group: the consumer group all replicas share.
        consumer: this replica's consumer name (unique per process).
        read_count: entries per read.
        block_ms: how long a read waits for new entries.
        reclaim_idle_ms: how long an entry stays pending before another consumer may claim it.
        reclaim_interval_ms: how often this replica looks for such entries (and for consumers to forget).
        forget_idle_ms: how long a consumer without pending entries stays in the group after its last read.
        seen_ttl_ms: how long a taken-in event id is remembered.
        coalesce_window_ms: the window in which one device's wake-ups are coalesced.
        notices_maxlen: approximate cap of the notices stream.
    """

    streams: Sequence[str]
    group: str
    consumer: str
    read_count: int = 100
    block_ms: int = 1000
    reclaim_idle_ms: int = 30_000
    reclaim_interval_ms: int = 5_000
    forget_idle_ms: int = 86_400_000
    seen_ttl_ms: int = 86_400_000
    coalesce_window_ms: int = 2_000
    notices_maxlen: int = 100_000


class EventIntake:
    """Consumes the event streams until stopped.

    Args:
        store: the queue and the streams.
        router: events to deliveries and notices.
        policy: streams, group and timings.
        meter: for the intake metrics.
        tracer: continues each event's trace.
        on_queued: called after an event queued deliveries (wakes the local delivery worker).
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: NotificationStore,
        router: Router,
        policy: IntakePolicy,
        meter: metrics.Meter,
        tracer: trace.Tracer,
        on_queued: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._router = router
        self._policy = policy
        self._tracer = tracer
        self._on_queued = on_queued
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._events = meter.create_counter(
            "notification.events", unit="{event}", description="Events taken in, by type and outcome"
        )
        self._coalesced = meter.create_counter(
            "notification.coalesced", unit="{event}", description="Wake-ups merged into a pending one"
        )

    def start(self) -> None:
        """Starts one reader per stream."""
        self._tasks = [
            asyncio.create_task(self._consume(stream), name=f"intake-{stream}") for stream in self._policy.streams
        ]

    async def stop(self) -> None:
        """Stops reading after the current read; entries not yet acknowledged stay pending for another consumer."""
        self._stopping = True
        await finish_or_cancel(self._tasks, self._policy.block_ms / 1000 + 2.0)
        self._tasks = []

    async def _consume(self, stream: str) -> None:
        policy = self._policy
        backoff = 0.05
        next_reclaim = 0.0
        # This consumer's own pending entries are read again at start (a replica with a fixed consumer name picks
        # up where it stopped) and after a Redis failure, rather than waiting for the idle-time reclaim.
        own_pending = True
        while not self._stopping:
            try:
                await self._store.ensure_group(stream, policy.group)
                while own_pending and not self._stopping:
                    mine = await self._store.read_group(
                        stream, policy.group, policy.consumer, policy.read_count, policy.block_ms, pending=True
                    )
                    await self._take_in(stream, mine)
                    own_pending = len(mine) == policy.read_count
                while not self._stopping:
                    if self._clock() >= next_reclaim:
                        next_reclaim = self._clock() + policy.reclaim_interval_ms / 1000
                        stale = await self._store.reclaim(
                            stream, policy.group, policy.consumer, policy.reclaim_idle_ms, policy.read_count
                        )
                        await self._take_in(stream, stale)
                        forgotten = await self._store.forget_consumers(stream, policy.group, policy.forget_idle_ms)
                        if forgotten:
                            _log.info("removed idle consumers of %s: %s", stream, ", ".join(forgotten))
                    entries = await self._store.read_group(
                        stream, policy.group, policy.consumer, policy.read_count, policy.block_ms
                    )
                    await self._take_in(stream, entries)
                    backoff = 0.05
            except RedisError as exc:
                _log.warning("event stream %s unavailable: %s; retrying in %.2f s", stream, exc, backoff)
                own_pending = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                # A bug must not end intake for good; the entries stay pending and come back by idle-time reclaim
                # (not at once: an entry that trips the bug every time must not hold up the stream).
                own_pending = False
                _log.exception("event intake failed on %s; retrying in %.2f s", stream, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _take_in(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        # A read's events cost a handful of round trips together, not a few each: what routing reads (push tokens,
        # webhooks) is read for all of them at once, they are queued by one script call and acknowledged by one
        # XACK. Events are independent, and coalescing keeps the newest data whatever the order.
        for start in range(0, len(entries), self._policy.read_count):
            chunk = entries[start : start + self._policy.read_count]
            events = [_parse(fields) for _, fields in chunk]
            looked_up = await self._router.look_up([event for event in events if event is not None])
            routed = [await self._route(event, looked_up) for event in events]
            taken = [item for item in routed if isinstance(item, RoutedEvent)]
            results = iter(
                await self._store.take_events(
                    taken,
                    now_ms=int(self._clock() * 1000),
                    seen_ttl_ms=self._policy.seen_ttl_ms,
                    coalesce_window_ms=self._policy.coalesce_window_ms,
                    notices_maxlen=self._policy.notices_maxlen,
                )
                if taken
                else []
            )
            for event in taken:
                if event.forget_push_token is not None:
                    await self._store.forget_push_token(*event.forget_push_token)
            # Acknowledged only now: everything the events ask for is in Redis (or they can never be delivered).
            await self._store.ack(stream, self._policy.group, [entry_id for entry_id, _ in chunk])
            # Counted once per (type, outcome) of the read rather than once per event: same totals, less work.
            counts: Counter[tuple[bytes, str]] = Counter()
            for (_, fields), item in zip(chunk, routed, strict=True):
                outcome = item if isinstance(item, str) else self._outcome(item, next(results))
                counts[fields.get(b"type", b""), outcome] += 1
            for (kind, outcome), count in counts.items():
                self._events.add(count, {"type": kind.decode(errors="replace"), "outcome": outcome})
            if any(outcome == "queued" for _, outcome in counts):
                self._on_queued()

    def _outcome(self, event: RoutedEvent, outcomes: list[int] | None) -> str:
        if outcomes is None:
            return "duplicate"
        merged = sum(1 for outcome in outcomes if outcome == MERGED)
        if merged:
            self._coalesced.add(merged)
        if event.deliveries or event.notices:
            return "queued"
        return "applied" if event.forget_push_token is not None else "ignored"

    async def _route(self, event: Event | None, looked_up: Lookups) -> RoutedEvent | str:
        """The event's deliveries and notices, or why it has none ("unreadable", "unroutable")."""
        if event is None:
            return "unreadable"
        if _sampled(event.traceparent):
            context = propagate.extract({"traceparent": event.traceparent})
            with self._tracer.start_as_current_span("notification take event", context=context) as span:
                span.set_attribute("parley.event.type", event.WhichOneof("payload") or "")
                return await self._routed(event, looked_up)
        return await self._routed(event, looked_up)

    async def _routed(self, event: Event, looked_up: Lookups) -> RoutedEvent | str:
        try:
            if not event.event_id:
                raise ValueError("no event_id")
            routed = await self._router.route(event, looked_up)
        except ValueError as exc:
            _log.warning("event %s cannot be routed: %s", event.event_id, exc)
            return "unroutable"
        return RoutedEvent(event.event_id, routed.deliveries, routed.notices, routed.forget_push_token)


def _parse(fields: dict[bytes, bytes]) -> Event | None:
    """The entry's event, or None when it cannot be read."""
    try:
        return Event.FromString(fields[b"event"])
    except (KeyError, DecodeError):
        _log.warning("unreadable event entry dropped")
        return None


def _sampled(traceparent: str) -> bool:
    """Whether the event's producer sampled its trace (W3C ``traceparent``: flags ``01`` set).

    Only then does taking the event in get a span: the sampler is parent-based, so a span under an unsampled
    parent would never be recorded, and an event that carries no trace was produced outside any request; making
    a span for each of those would cost every event a span's work for the few that a root sampler keeps.
    """
    try:
        return len(traceparent) == 55 and int(traceparent[-2:], 16) & 1 == 1
    except ValueError:
        return False  # not W3C trace context: no parent to continue
