"""The delivery worker on an in-memory queue: claims come in batches while a backlog lasts, the in-flight cap
holds, every delivery is posted and ended; and the body it posts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.sdk.metrics import MeterProvider
from support.notification import eventually

from parley.common.v1.common_pb2 import ProviderStatus
from parley_notification.delivery import DeliveryPolicy, DeliveryWorker, body_of
from parley_notification.model import Claim, Delivery, Webhook
from parley_notification.webhook_client import AttemptResult, Outcome
from parley_runtime.auth import ProviderRecord


def _delivery(n: int, data: str = '{"address":"username:alice@birdy/1","pending":1}') -> Delivery:
    return Delivery(f"{n:032x}", "birdy", "message_waiting", data, 1_000 + n, 1, 0, 1_000)


class _Queue:
    """Enough of the store for the worker: every delivery due at once, claims and finishes recorded."""

    def __init__(self, count: int) -> None:
        self.due = [_delivery(n) for n in range(count)]
        self.claims: list[tuple[int, int]] = []  # (asked for, got)
        self.finished: list[str] = []

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> Claim:
        taken, self.due = self.due[:limit], self.due[limit:]
        self.claims.append((limit, len(taken)))
        return Claim(taken, now_ms if self.due else None)

    async def finish(self, delivery_ids: Sequence[str]) -> list[bool]:
        self.finished += delivery_ids
        return [True] * len(delivery_ids)

    async def webhook(self, provider_id: str) -> Webhook | None:
        return Webhook("https://birdy.example/hook", b"s" * 32)

    async def queue_depth(self) -> dict[str, int]:
        return {}


class _Endpoint:
    def __init__(self) -> None:
        self.inflight = 0
        self.most_inflight = 0
        self.bodies: list[bytes] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        # Uneven response times, so attempts end one by one rather than all together.
        await asyncio.sleep(0.001 * (len(self.bodies) % 5))
        self.bodies.append(body)
        self.inflight -= 1
        return AttemptResult(Outcome.DELIVERED, 204)


class _Providers:
    def get(self, provider_id: str) -> ProviderRecord | None:
        key = Ed25519PrivateKey.generate().public_key()
        return ProviderRecord(provider_id, ProviderStatus.PROVIDER_STATUS_APPROVED, key, frozenset())

    def all(self) -> list[ProviderRecord]:
        return []


@pytest.mark.parametrize(
    ("lease_ms", "first_claim"),
    [
        (30_000, 16 + 8),  # every place and a batch claimed ahead
        (10_000, 16),  # a lease too short to wait for a place as well: only free places are claimed
    ],
)
async def test_a_backlog_is_claimed_in_batches_within_the_in_flight_cap(lease_ms: int, first_claim: int) -> None:
    queue, endpoint = _Queue(200), _Endpoint()
    policy = DeliveryPolicy(
        concurrency=16, claim_batch=8, lease_ms=lease_ms, attempt_timeout_ms=5_000, poll_interval_ms=10
    )
    worker = DeliveryWorker(queue, endpoint, _Providers(), policy, MeterProvider().get_meter("test"))
    worker.start()
    try:

        async def all_finished() -> bool:
            return len(queue.finished) == 200

        await eventually(all_finished)
    finally:
        await worker.stop()
    assert sorted(queue.finished) == sorted(d.delivery_id for d in map(_delivery, range(200)))
    assert len(endpoint.bodies) == 200
    assert endpoint.most_inflight <= 16
    assert queue.claims[0] == (first_claim, first_claim)
    # After the first claim fills every place, each claim waits for a batch's worth of room.
    backlogged = [asked for asked, got in queue.claims[1:] if got]
    assert backlogged
    assert min(backlogged) >= 8
    assert len(queue.claims) <= 1 + 200 // 8 + 2


def test_the_body_is_the_canonical_json_of_the_delivery() -> None:
    # Data as routing writes it (compact, sorted keys), with characters JSON escapes.
    routed = json.dumps(
        {"address": "username:zoë@birdy/1", "alert": True, "pending": 3, "push_token": 'a"b\\c'},
        separators=(",", ":"),
        sort_keys=True,
    )
    delivery = _delivery(7, routed)
    expected = json.dumps(
        {
            "id": delivery.delivery_id,
            "type": delivery.type,
            "occurred_at_ms": delivery.occurred_at_ms,
            "coalesced": delivery.coalesced,
            "data": json.loads(routed),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    assert body_of(delivery) == expected
