"""Per-provider parity: how the relay treats each provider's traffic, native and third party side by side.

The DMA requires a gatekeeper to treat third-party messages like its own. The relay counts, per provider, the
stanzas its users sent that were accepted or refused (by reason), the copies its devices acknowledged, and the
time from acceptance to acknowledgement. Two outputs:

- **Metrics** (``relay.stanzas.accepted`` / ``relay.stanzas.refused`` with ``parley.provider``, and
  ``relay.delivered`` / ``relay.delivery.latency`` with ``parley.provider`` = the recipient's and
  ``parley.sender_provider``) for dashboards.
- **A queryable record** for the admin's ``GetParityReport``: per provider and minute, a Redis HASH
  ``parity:{<provider>}:<minute>`` holding the same counts and a latency histogram. Counts gather in memory and
  go to Redis once a second in one pipeline, so the hot path pays no Redis work for them; a replica killed loses
  at most its last second of counts (telemetry, not messages).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics

from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis
from parley_runtime.telemetry import DELIVERY_MILLISECONDS_BUCKETS

_log = logging.getLogger(__name__)

MINUTE_MS = 60_000
LATENCY_BOUNDS_MS = DELIVERY_MILLISECONDS_BUCKETS
"""Upper bounds of the stored latency buckets (the last bucket is everything above)."""

_PROVIDER = "parley.provider"
_SENDER_PROVIDER = "parley.sender_provider"


@dataclass(slots=True)
class _Minute:
    """One provider's counts in one minute, not yet flushed."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    latency_sum_ms: float = 0.0
    latency_buckets: Counter[int] = field(default_factory=Counter)

    def fields(self) -> dict[str, int]:
        counts = {"accepted": self.accepted, "delivered": self.delivered}
        counts |= {f"refused:{reason}": count for reason, count in self.refused.items()}
        counts |= {f"le:{index}": count for index, count in self.latency_buckets.items()}
        return {name: count for name, count in counts.items() if count}


@dataclass(frozen=True, slots=True)
class ProviderParity:
    """One provider's figures over a window.

    Attributes:
        provider_id: the provider.
        accepted: stanzas its users sent that the relay accepted.
        refused: stanzas its users sent that the relay refused, by reason.
        delivered: copies its devices acknowledged.
        latency_mean_ms: mean time from acceptance to acknowledgement (0 without deliveries).
        latency_buckets: acknowledged copies per latency bucket (``LATENCY_BOUNDS_MS``, then the overflow).
    """

    provider_id: str
    accepted: int
    refused: dict[str, int]
    delivered: int
    latency_mean_ms: float
    latency_buckets: tuple[int, ...]

    def latency_quantile_ms(self, quantile: float) -> float:
        """The delivery latency below which ``quantile`` of the copies fell, interpolated within its bucket (0
        without deliveries; the last finite bound when it falls in the overflow bucket)."""
        total = sum(self.latency_buckets)
        if not total:
            return 0.0
        rank = quantile * total
        seen = 0
        for index, count in enumerate(self.latency_buckets):
            if count and seen + count >= rank:
                if index >= len(LATENCY_BOUNDS_MS):
                    return float(LATENCY_BOUNDS_MS[-1])
                lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
                return lower + (LATENCY_BOUNDS_MS[index] - lower) * (rank - seen) / count
            seen += count
        return float(LATENCY_BOUNDS_MS[-1])


class ParityRecorder:
    """Counts the relay's treatment of each provider (see the module docstring).

    Args:
        client: Redis, for the flushed per-minute record.
        meter: where the parity metrics go.
        retention_s: how long per-minute records are kept.
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(
        self,
        client: Redis,
        meter: metrics.Meter,
        *,
        retention_s: int = 8 * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._retention_ms = retention_s * 1000
        self._clock = clock
        self._pending: defaultdict[tuple[str, int], _Minute] = defaultdict(_Minute)
        self._accepted = meter.create_counter("relay.stanzas.accepted", unit="{stanza}", description="Accepted")
        self._refused = meter.create_counter("relay.stanzas.refused", unit="{stanza}", description="Refused")
        self._delivered = meter.create_counter(
            "relay.delivered", unit="{copy}", description="Copies a recipient device acknowledged"
        )
        self._latency = meter.create_histogram(
            "relay.delivery.latency",
            unit="ms",
            description="From a stanza's acceptance to its acknowledgement by a recipient device",
            explicit_bucket_boundaries_advisory=DELIVERY_MILLISECONDS_BUCKETS,
        )
        self._task: asyncio.Task[None] | None = None

    def _minute(self, provider_id: str, at_ms: int) -> _Minute:
        return self._pending[(provider_id, at_ms // MINUTE_MS)]

    def sent(self, provider_id: str, accepted: Counter[bool], refused: Counter[str]) -> None:
        """Counts one call's outcomes for a sender of ``provider_id``.

        Args:
            provider_id: the sending device's provider.
            accepted: accepted stanzas by whether they were duplicates.
            refused: refused stanzas by reason name.
        """
        minute = self._minute(provider_id, int(self._clock() * 1000))
        for duplicate, count in accepted.items():
            self._accepted.add(count, {"duplicate": duplicate, _PROVIDER: provider_id})
            minute.accepted += count
        for reason, count in refused.items():
            self._refused.add(count, {"reason": reason, _PROVIDER: provider_id})
            minute.refused[reason] += count

    def delivered(self, provider_id: str, deliveries: Iterable[tuple[str, int]]) -> None:
        """Counts copies a device of ``provider_id`` acknowledged: ``(sender provider, acceptance ms)`` each."""
        now_ms = int(self._clock() * 1000)
        minute = self._minute(provider_id, now_ms)
        by_sender: dict[str, list[int]] = {}
        for sender_provider, accepted_ms in deliveries:
            by_sender.setdefault(sender_provider, []).append(max(0, now_ms - accepted_ms))
        # One attribute set per sender provider for the whole acknowledgement, not one per copy.
        for sender_provider, latencies in by_sender.items():
            attributes = {_PROVIDER: provider_id, _SENDER_PROVIDER: sender_provider}
            record = self._latency.record
            for latency_ms in latencies:
                record(latency_ms, attributes)
                minute.latency_buckets[_bucket(latency_ms)] += 1
            minute.delivered += len(latencies)
            minute.latency_sum_ms += sum(latencies)
            self._delivered.add(len(latencies), attributes)

    def start(self, interval_s: float = 1.0) -> None:
        """Starts flushing to Redis every ``interval_s``."""
        self._task = asyncio.create_task(self._flush_every(interval_s))

    async def stop(self) -> None:
        """Stops flushing, after a last flush."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception:
                _log.warning("parity counts not flushed; retrying", exc_info=True)

    async def flush(self) -> None:
        """Writes the counts gathered since the last flush; if Redis fails they are kept for the next one (a flush
        cut off midway may then count some twice: figures to watch, not to bill by)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, defaultdict(_Minute)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for (provider_id, minute_index), minute in pending.items():
                    key = redis_keys.parity(provider_id, minute_index)
                    for name, count in minute.fields().items():
                        pipe.hincrby(key, name, count)
                    if minute.latency_sum_ms:
                        pipe.hincrbyfloat(key, "latency_sum_ms", minute.latency_sum_ms)
                    pipe.pexpireat(key, (minute_index + 1) * MINUTE_MS + self._retention_ms)
                await pipe.execute()
        except BaseException:
            for pending_key, minute in pending.items():
                _merge(self._pending[pending_key], minute)
            raise

    async def report(self, provider_ids: Sequence[str], from_ms: int, to_ms: int) -> list[ProviderParity]:
        """Each provider's figures over the minutes that overlap ``[from_ms, to_ms)``, flushed counts only."""
        minutes = range(from_ms // MINUTE_MS, (to_ms - 1) // MINUTE_MS + 1)
        async with self._client.pipeline(transaction=False) as pipe:
            for provider_id in provider_ids:
                for minute_index in minutes:
                    pipe.hgetall(redis_keys.parity(provider_id, minute_index))
            rows: list[Any] = await pipe.execute()
        report = []
        for position, provider_id in enumerate(provider_ids):
            totals: Counter[str] = Counter()
            latency_sum_ms = 0.0
            for row in rows[position * len(minutes) : (position + 1) * len(minutes)]:
                for name, value in row.items():
                    if name == b"latency_sum_ms":
                        latency_sum_ms += float(value)
                    else:
                        totals[name.decode()] += int(value)
            delivered = totals["delivered"]
            report.append(
                ProviderParity(
                    provider_id=provider_id,
                    accepted=totals["accepted"],
                    refused={
                        name.removeprefix("refused:"): count
                        for name, count in sorted(totals.items())
                        if name.startswith("refused:")
                    },
                    delivered=delivered,
                    latency_mean_ms=latency_sum_ms / delivered if delivered else 0.0,
                    latency_buckets=tuple(totals[f"le:{index}"] for index in range(len(LATENCY_BOUNDS_MS) + 1)),
                )
            )
        return report


@dataclass(frozen=True, slots=True)
class ParityReports:
    """What the admin's parity report needs.

    Attributes:
        recorder: the counts.
        providers: the enlisted providers' ids, now.
        native: the gatekeeper's own provider ("" when none is named).
        max_window_ms: the longest window a report may cover (the records' retention).
    """

    recorder: ParityRecorder
    providers: Callable[[], Iterable[str]]
    native: str
    max_window_ms: int


def _bucket(latency_ms: float) -> int:
    """Index of the latency bucket ``latency_ms`` falls in (upper bounds inclusive, as Prometheus's ``le``; one
    past the last bound for the overflow)."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def _merge(into: _Minute, other: _Minute) -> None:
    into.accepted += other.accepted
    into.refused.update(other.refused)
    into.delivered += other.delivered
    into.latency_sum_ms += other.latency_sum_ms
    into.latency_buckets.update(other.latency_buckets)
