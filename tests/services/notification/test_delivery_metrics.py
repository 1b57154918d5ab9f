"""The delivery metrics per provider, read through the process's in-memory metric reader.

Queue depth, delivery latency, retries and dead letters, each with attribute ``parley.provider``: one provider's
deliveries are held, failed once, refused and accepted while another's are accepted at once, and every number
must land on the right provider. The reader is the process's (cumulative), so counters are compared before and
after, and the providers' ids are used by no other test.
"""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.cluster import Cluster
from support.notification import (
    Received,
    WebhookReceiver,
    drained,
    eventually,
    message_waiting,
    publish,
    register_webhook,
    start_notification,
)
from support.telemetry import sums

HELD = "metered"
PROMPT = "tallied"
COUNTERS = ("notification.delivered", "notification.retries", "notification.dead_letters")
LATENCY = "notification.delivery.latency"
DEPTH = "notification.queue.depth"


def _per_provider(reader: InMemoryMetricReader) -> dict[tuple[str, str], float]:
    """(metric, provider) -> the counter's sum, the histogram's count, or the gauge's value."""
    values: dict[tuple[str, str], float] = {}
    for name in (*COUNTERS, LATENCY, DEPTH):
        for attributes, value in sums(reader, name).items():
            key = (name, dict(attributes).get("parley.provider", ""))
            values[key] = values.get(key, 0) + value
    return values


async def test_delivery_metrics_are_counted_per_provider(cluster: Cluster, metric_reader: InMemoryMetricReader) -> None:
    release = asyncio.Event()
    calls: dict[str, int] = {}

    async def held_then_mixed(request: Received, _index: int) -> int:
        await release.wait()
        device = request.document["data"]["address"].rsplit("/", 1)[1]
        calls[device] = calls.get(device, 0) + 1
        if device == "1":
            return 500 if calls[device] == 1 else 200  # one retry, then delivered
        if device == "2":
            return 400  # refused: dead-lettered at once
        return 200

    held = WebhookReceiver(behaviour=held_then_mixed)
    prompt = WebhookReceiver()
    try:
        await cluster.start_identity()
        held_keys = await cluster.enlist(HELD)
        prompt_keys = await cluster.enlist(PROMPT)
        # Held calls must neither time out nor outlive their lease while the test looks at the queue.
        await start_notification(cluster, webhook_timeout_s=10.0, delivery_lease_ms=20_000)
        await drained(cluster.redis_url, "identity")
        await register_webhook(cluster, held_keys, await held.start())
        await register_webhook(cluster, prompt_keys, await prompt.start())
        before = _per_provider(metric_reader)

        await publish(
            cluster.redis_url,
            "relay",
            *(message_waiting(f"username:user@{HELD}/{device}") for device in (1, 2, 3)),
            message_waiting(f"username:user@{PROMPT}/1"),
        )

        async def depth_is(provider: str, expected: int) -> bool:
            return _per_provider(metric_reader).get((DEPTH, provider)) == expected

        async def all_held() -> bool:
            return len(held.received) == 3

        # All three are in flight on the held endpoint, and queued until answered.
        await eventually(all_held)
        await eventually(lambda: depth_is(HELD, 3))
        release.set()
        await eventually(lambda: depth_is(HELD, 0))
        await prompt.wait_for(lambda: len(prompt.accepted) == 1)

        async def settled() -> bool:
            after = _per_provider(metric_reader)
            done = [
                ("notification.delivered", HELD, 2),
                ("notification.dead_letters", HELD, 1),
                ("notification.delivered", PROMPT, 1),
            ]
            return all(after.get((name, p), 0) - before.get((name, p), 0) == n for name, p, n in done)

        await eventually(settled)
        after = _per_provider(metric_reader)
        delta = {key: after[key] - before.get(key, 0) for key in after if key[0] != DEPTH}
        assert delta.get(("notification.retries", HELD)) == 1
        assert delta.get(("notification.dead_letters", HELD)) == 1
        assert delta.get((LATENCY, HELD)) == 2
        assert delta.get(("notification.retries", PROMPT), 0) == 0
        assert delta.get(("notification.dead_letters", PROMPT), 0) == 0
        assert delta.get((LATENCY, PROMPT)) == 1
    finally:
        release.set()
        await held.stop()
        await prompt.stop()
