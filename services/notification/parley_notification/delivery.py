"""The delivery worker: claims due deliveries, posts them signed, and retries, ends or dead-letters each.

Every replica runs one. Deliveries are leased (``claim_due.lua``), so replicas share the queue and a replica
that dies mid-attempt loses nothing: the lease runs out and another attempts the delivery again under the same
idempotency key. Retries back off exponentially with jitter; the schedule is the ``{queue}`` sorted set in
Redis, so it survives restarts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import metrics
from redis.exceptions import RedisError

from parley.common.v1.common_pb2 import ProviderStatus
from parley_notification.background import finish_or_cancel
from parley_notification.model import Delivery
from parley_notification.routing import Providers
from parley_notification.store import NotificationStore
from parley_notification.webhook_client import AttemptResult, Outcome, WebhookClient
from parley_runtime.telemetry import DELIVERY_MILLISECONDS_BUCKETS, RPC_MILLISECONDS_BUCKETS
from parley_sdk import webhooks

_log = logging.getLogger(__name__)

_PROVIDER = "parley.provider"
_DEPTH_REFRESH_S = 1.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How deliveries are attempted.

    Attributes:
        max_attempts: attempts before a delivery is dead-lettered.
        backoff_base_ms: the delay before the second attempt; each later one doubles it.
        backoff_max_ms: the longest delay between attempts.
        lease_ms: how long an attempt holds its delivery; longer than the HTTP timeout.
        concurrency: attempts in flight at once in this replica.
        claim_batch: while more deliveries are due than the replica has room for, it claims this many at once
            (one round trip) rather than one per ended attempt, and keeps up to this many claimed ahead so that an
            ended attempt is followed by the next at once; capped at ``concurrency``. Claiming ahead needs a lease
            that outlives a wait for a place plus an attempt (``lease_ms`` >= 2 x ``attempt_timeout_ms`` + 1 s);
            with a shorter lease the replica claims only for places that are free.
        attempt_timeout_ms: the longest one webhook call takes (the HTTP client's total timeout).
        poll_interval_ms: the longest idle wait between looks at the schedule.
        dead_letter_maxlen: approximate cap of the dead-letter stream.
    """

    max_attempts: int = 8
    backoff_base_ms: int = 1000
    backoff_max_ms: int = 600_000
    lease_ms: int = 30_000
    concurrency: int = 64
    claim_batch: int = 16
    attempt_timeout_ms: int = 5_000
    poll_interval_ms: int = 200
    dead_letter_maxlen: int = 100_000

    @property
    def claim_ahead(self) -> int:
        """How many claimed deliveries may wait for a place (see ``claim_batch``)."""
        if self.lease_ms < 2 * self.attempt_timeout_ms + 1_000:
            return 0
        return min(self.claim_batch, self.concurrency)

    def backoff_ms(self, attempt: int, rand: float) -> int:
        """The delay after failed attempt ``attempt`` (from 1): exponential, with "equal" jitter.

        Half the exponential delay is fixed and half random, so retries of many deliveries that failed together
        spread out while each still waits at least half its step.

        Args:
            attempt: the attempt that failed.
            rand: a uniform random number in [0, 1).
        """
        step = min(self.backoff_max_ms, self.backoff_base_ms * 2 ** min(attempt - 1, 40))
        return int(step / 2 + rand * step / 2)


def body_of(delivery: Delivery) -> bytes:
    """The JSON body posted for a delivery: the same bytes on every attempt.

    Compact JSON with sorted keys. ``data`` is spliced in as stored: routing wrote it in that same form, so
    decoding and encoding it again would only reproduce it (the keys below are in sorted order too).
    """
    return (
        f'{{"coalesced":{delivery.coalesced:d},"data":{delivery.data},"id":{json.dumps(delivery.delivery_id)},'
        f'"occurred_at_ms":{delivery.occurred_at_ms:d},"type":{json.dumps(delivery.type)}}}'
    ).encode()


class _Finisher:
    """Ends accepted deliveries in batches: every delivery accepted while one script call runs goes in the next.

    Args:
        store: the queue.
        on_ended: called with each batch's deliveries that were ended by it (not ended before), for the metrics.
        batch: most deliveries per call.
    """

    def __init__(self, store: NotificationStore, on_ended: Callable[[list[Delivery]], None], batch: int = 256) -> None:
        self._store = store
        self._on_ended = on_ended
        self._batch = batch
        self._waiting: list[tuple[Delivery, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def finish(self, delivery: Delivery) -> None:
        """Ends one delivery (nothing happens when it was already ended).

        Raises:
            RedisError: the call failed (the delivery stays queued; its lease runs out).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="finish-deliveries")
        await future

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._batch], self._waiting[self._batch :]
            try:
                ended = await self._store.finish([delivery.delivery_id for delivery, _ in batch])
            except Exception as exc:  # handed to every waiter, each of which handles it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():  # its attempt may have been cancelled by a stop meanwhile
                    future.set_result(None)
            try:
                self._on_ended([delivery for (delivery, _), flag in zip(batch, ended, strict=True) if flag])
            except Exception:  # metrics must not stop the batches queued behind this one
                _log.exception("counting delivered webhooks failed")


class DeliveryWorker:
    """Attempts due deliveries until stopped.

    Args:
        store: the queue.
        client: the HTTP client.
        providers: the provider directory (suspended or revoked providers are not called).
        policy: attempts, backoff, lease, concurrency.
        meter: for the delivery metrics.
        clock: seconds since the epoch.
        rand: uniform random numbers in [0, 1) for the backoff jitter.
    """

    def __init__(
        self,
        store: NotificationStore,
        client: WebhookClient,
        providers: Providers,
        policy: DeliveryPolicy,
        meter: metrics.Meter,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._finisher = _Finisher(store, self._count_delivered)
        self._client = client
        self._providers = providers
        self._policy = policy
        self._clock = clock
        self._rand = rand
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # Claimed, waiting for a place: an attempt that ends starts the next one at once, not a claim's round trip
        # later. Each waits at most until one of the attempts in flight ends, well within its lease.
        self._ready: collections.deque[Delivery] = collections.deque()
        # Set when an attempt ends and leaves at least ``_room_wanted`` free places (see _step).
        self._room = asyncio.Event()
        self._room_wanted = 1
        self._backlog = False  # the last claim took all it asked for: more may be due
        self._stopping = False
        self._depth_providers: set[str] = set()
        self._depth_at = 0.0
        self._delivered = meter.create_counter(
            "notification.delivered", unit="{delivery}", description="Deliveries a provider accepted"
        )
        self._retries = meter.create_counter(
            "notification.retries", unit="{attempt}", description="Failed attempts scheduled for a retry"
        )
        self._dead_letters = meter.create_counter(
            "notification.dead_letters", unit="{delivery}", description="Deliveries given up on"
        )
        self._duration = meter.create_histogram(
            "notification.attempt.duration",
            unit="ms",
            description="Duration of one webhook call",
            explicit_bucket_boundaries_advisory=RPC_MILLISECONDS_BUCKETS,
        )
        self._latency = meter.create_histogram(
            "notification.delivery.latency",
            unit="ms",
            description="From the event to the provider's acceptance",
            explicit_bucket_boundaries_advisory=DELIVERY_MILLISECONDS_BUCKETS,
        )
        # Set on each refresh rather than observed in a callback: the meter hands every worker of a process the
        # instrument the first one registered, callback included, so a worker built later (a service restarted in
        # the same process) would never be heard: the first one's stale counts would stand in for it.
        self._depth = meter.create_gauge(
            "notification.queue.depth",
            unit="{delivery}",
            description="Deliveries queued (scheduled or in flight) per provider",
        )

    def start(self) -> None:
        """Starts attempting deliveries in the background."""
        self._task = asyncio.create_task(self._run(), name="deliveries")

    def wake(self) -> None:
        """Says that deliveries were queued, so the worker looks at once instead of at its next poll."""
        self._wake.set()

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stops claiming and starting attempts, lets attempts in flight end within ``grace_s``, then cancels the
        rest (their leases run out and another replica makes them again under the same idempotency key, as it
        does the deliveries claimed ahead and not started)."""
        self._stopping = True
        self._wake.set()
        self._room.set()
        if self._task is not None:
            await finish_or_cancel([self._task], self._policy.poll_interval_ms / 1000 + 2.0)
            self._task = None
        await finish_or_cancel(set(self._inflight), grace_s)

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                await self._step()
                backoff = 0.05
            except RedisError as exc:
                _log.warning("delivery queue unavailable: %s; retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                _log.exception("delivery loop failed; retrying in %.2f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _step(self) -> None:
        if self._clock() - self._depth_at >= _DEPTH_REFRESH_S:
            await self._refresh_depth()
        policy = self._policy
        free = policy.concurrency + policy.claim_ahead - len(self._inflight) - len(self._ready)
        # While the queue is backed up, claiming each time an attempt ends would cost a round trip per delivery;
        # waiting for a batch's worth of room makes it one per batch, and the deliveries claimed ahead keep every
        # place busy meanwhile.
        wanted = min(policy.claim_batch, policy.concurrency) if self._backlog else 1
        if free < wanted:
            self._room_wanted = wanted
            self._room.clear()
            await self._room.wait()
            return
        self._wake.clear()
        now_ms = int(self._clock() * 1000)
        claim = await self._store.claim_due(now_ms, policy.lease_ms, free)
        self._ready.extend(claim.deliveries)
        self._start_ready()
        self._backlog = len(claim.deliveries) == free
        if self._backlog:
            return
        wait_ms = policy.poll_interval_ms
        if claim.next_due_ms is not None:
            wait_ms = max(0, min(wait_ms, claim.next_due_ms - int(self._clock() * 1000)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait_ms / 1000)

    def _start_ready(self) -> None:
        while self._ready and len(self._inflight) < self._policy.concurrency and not self._stopping:
            task = asyncio.create_task(self._attempt(self._ready.popleft()))
            self._inflight.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._start_ready()
        free = self._policy.concurrency + self._policy.claim_ahead - len(self._inflight) - len(self._ready)
        if free >= self._room_wanted:
            self._room.set()

    async def _refresh_depth(self) -> None:
        depth = await self._store.queue_depth()
        # The store forgets a provider once its queue is empty; a gauge left alone would show its last count.
        for provider in self._depth_providers - depth.keys():
            self._depth.set(0, {_PROVIDER: provider})
        for provider, count in depth.items():
            self._depth.set(count, {_PROVIDER: provider})
        self._depth_providers = set(depth)
        self._depth_at = self._clock()

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            try:
                result = await self._post(delivery)
            except RedisError:
                raise
            except Exception as exc:
                # Counted as a failed attempt, so a delivery that always trips a bug ends in the dead letters
                # instead of being leased again forever.
                _log.exception("delivery %s failed unexpectedly", delivery.delivery_id)
                result = AttemptResult(Outcome.RETRY, error=f"internal: {type(exc).__name__}")
            await self._record(delivery, result)
        except RedisError as exc:
            # The lease runs out and the delivery is attempted again; nothing is lost.
            _log.warning("delivery %s not recorded: %s", delivery.delivery_id, exc)

    async def _post(self, delivery: Delivery) -> AttemptResult:
        record = self._providers.get(delivery.provider_id)
        if record is None or record.status != ProviderStatus.PROVIDER_STATUS_APPROVED:
            return AttemptResult(Outcome.RETRY, error="provider not approved")
        webhook = await self._store.webhook(delivery.provider_id)
        if webhook is None:
            return AttemptResult(Outcome.RETRY, error="no webhook registered")
        body = body_of(delivery)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            webhooks.TIMESTAMP_HEADER: str(timestamp),
            webhooks.SIGNATURE_HEADER: webhooks.sign(webhook.secret, timestamp, body),
            webhooks.IDEMPOTENCY_HEADER: delivery.delivery_id,
            webhooks.EVENT_TYPE_HEADER: delivery.type,
            webhooks.ATTEMPT_HEADER: str(delivery.attempt),
        }
        start = time.perf_counter()
        result = await self._client.post(webhook.url, body, headers)
        self._duration.record(
            (time.perf_counter() - start) * 1000,
            {_PROVIDER: delivery.provider_id, "outcome": result.outcome.value},
        )
        return result

    def _count_delivered(self, ended: list[Delivery]) -> None:
        # The counter is added to once per provider and batch, not once per delivery: same totals, less work.
        now_ms = self._clock() * 1000
        per_provider: Counter[str] = Counter()
        for delivery in ended:
            per_provider[delivery.provider_id] += 1
            self._latency.record(max(0.0, now_ms - delivery.occurred_at_ms), {_PROVIDER: delivery.provider_id})
        for provider, count in per_provider.items():
            self._delivered.add(count, {_PROVIDER: provider})

    async def _record(self, delivery: Delivery, result: AttemptResult) -> None:
        attributes = {_PROVIDER: delivery.provider_id}
        now = self._clock()
        if result.outcome is Outcome.DELIVERED:
            await self._finisher.finish(delivery)
            return
        if result.outcome is Outcome.RETRY and delivery.attempt < self._policy.max_attempts:
            due_ms = int(now * 1000) + self._policy.backoff_ms(delivery.attempt, self._rand())
            if await self._store.retry(delivery.delivery_id, delivery.attempt, due_ms, result.error):
                self._retries.add(1, attributes)
            return
        entry = await self._store.dead_letter(delivery, result.error, int(now * 1000), self._policy.dead_letter_maxlen)
        if entry:
            self._dead_letters.add(1, attributes)
            _log.warning(
                "delivery dead-lettered",
                extra={"provider": delivery.provider_id, "delivery": delivery.delivery_id, "error": result.error},
            )
