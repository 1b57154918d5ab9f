"""Publishing events to Redis streams (schema: ``parley.events.v1.Event``; see docs/events.md)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from opentelemetry import propagate

from parley.events.v1.events_pb2 import Event
from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis

DEFAULT_MAXLEN = 1_000_000
"""Approximate cap per stream: a backlog this deep means notification is down, and memory must stay bounded."""


class EventPublisher:
    """Appends events to one domain's stream, carrying the current trace context.

    Args:
        client: Redis client.
        domain: stream domain, e.g. ``"identity"`` (see ``redis_keys.event_stream``).
        maxlen: approximate cap of the stream's length.
    """

    def __init__(self, client: Redis, domain: str, *, maxlen: int = DEFAULT_MAXLEN) -> None:
        self._client = client
        self._stream = redis_keys.event_stream(domain)
        self._maxlen = maxlen

    @property
    def stream(self) -> str:
        """The stream key."""
        return self._stream

    async def publish(self, event: Event) -> str:
        """Fills in id, time and trace context, appends the event, and returns its ``event_id``.

        Args:
            event: an ``Event`` with its payload set.
        """
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[Event]) -> list[str]:
        """Appends several events in one round trip, in order; returns their ``event_id``s.

        Args:
            events: ``Event``s with their payloads set.
        """
        fields = [self._fields(event) for event in events]
        if not fields:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for entry in fields:
                pipe.xadd(self._stream, entry, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()
        return [event.event_id for event in events]

    @staticmethod
    def _fields(event: Event) -> dict[str, str | bytes]:
        """Fills in id, time and trace context; the stream entry's fields."""
        payload = event.WhichOneof("payload")
        if payload is None:
            raise ValueError("event has no payload")
        if not event.event_id:
            event.event_id = secrets.token_hex(16)
        if not event.occurred_at_ms:
            event.occurred_at_ms = int(time.time() * 1000)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        event.traceparent = carrier.get("traceparent", "")
        return {"type": payload, "event": event.SerializeToString()}
