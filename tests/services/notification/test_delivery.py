"""Webhook deliveries end to end: real identity and notification services, real Redis, a real HTTP endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.cluster import ADMIN, Cluster, ProviderKeys
from support.notification import (
    Received,
    WebhookReceiver,
    drained,
    eventually,
    message_waiting,
    notification,
    publish,
    redis_client,
    register_webhook,
    start_notification,
)

from parley.common.v1.common_pb2 import Feature
from parley.events.v1.events_pb2 import Event, IdentityKeyChanged, PreKeysLow
from parley.identity.v1 import identity_pb2 as id_pb
from parley.notification.v1 import notification_pb2 as pb
from parley.notification.v1 import notification_pb2_grpc
from parley_sdk import webhooks

ALICE = "username:alice@birdy"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    endpoint = WebhookReceiver()
    yield endpoint
    await endpoint.stop()


async def _birdy(cluster: Cluster, receiver: WebhookReceiver, **settings: object) -> tuple[ProviderKeys, bytes]:
    await cluster.start_identity()
    await cluster.enlist("gatekeeper")
    birdy = await cluster.enlist("birdy")
    await start_notification(cluster, **settings)
    # The approvals' events are taken in before the webhook exists, so the endpoint hears only what a test sends.
    await drained(cluster.redis_url, "identity")
    secret = await register_webhook(cluster, birdy, await receiver.start())
    return birdy, secret


async def test_message_waiting_reaches_the_devices_provider_signed(cluster: Cluster, receiver: WebhookReceiver) -> None:
    birdy, secret = await _birdy(cluster, receiver)
    [device] = await cluster.register_user(birdy, ALICE)
    await notification(cluster).RegisterPushTarget(
        pb.RegisterPushTargetRequest(push_token="tok-123"), metadata=birdy.auth(ALICE, 1)
    )
    [event_id] = await publish(cluster.redis_url, "relay", message_waiting(device, pending=3))

    await receiver.wait_for(lambda: any(r.document["type"] == "message_waiting" for r in receiver.accepted))
    [request] = [r for r in receiver.accepted if r.document["type"] == "message_waiting"]
    headers = request.headers
    assert webhooks.verify(
        secret, headers["Parley-Timestamp"], request.body, headers["Parley-Signature"], now=time.time()
    )
    assert not webhooks.verify(
        b"\x00" * 32, headers["Parley-Timestamp"], request.body, headers["Parley-Signature"], now=time.time()
    )
    assert headers["Content-Type"] == "application/json"
    assert headers["Parley-Event-Type"] == "message_waiting"
    assert headers["Parley-Attempt"] == "1"
    document = request.document
    assert document["id"] == request.key
    assert document["coalesced"] == 0
    # Addresses, push token and a count: nothing else (no content, no names).
    assert document["data"] == {"address": device, "pending": 3, "alert": True, "push_token": "tok-123"}
    assert event_id not in request.body.decode()


async def test_prekeys_low_tells_the_provider_both_counts(cluster: Cluster, receiver: WebhookReceiver) -> None:
    birdy, _ = await _birdy(cluster, receiver)
    [device] = await cluster.register_user(birdy, ALICE)
    low = PreKeysLow(address=device, remaining=30, remaining_pq=9, low_watermark=10)
    await publish(cluster.redis_url, "keys", Event(prekeys_low=low))
    await receiver.wait_for(lambda: any(r.document["type"] == "prekeys_low" for r in receiver.accepted))
    [request] = [r for r in receiver.accepted if r.document["type"] == "prekeys_low"]
    # The one-time Kyber prekeys ran low, not the EC ones: the provider sees which kind to refill.
    assert request.document["data"] == {"address": device, "remaining": 30, "remaining_pq": 9, "low_watermark": 10}


async def test_a_slow_endpoint_times_out_and_the_retry_carries_the_same_key(
    cluster: Cluster, receiver: WebhookReceiver
) -> None:
    async def slow_once(_request: Received, index: int) -> int:
        if index == 0:
            await asyncio.sleep(1.5)  # beyond the 1 s timeout: the client gives up, the attempt failed
        return 200

    receiver.behaviour = slow_once
    await _birdy(cluster, receiver)
    await publish(cluster.redis_url, "relay", message_waiting(f"{ALICE}/1"))

    await receiver.wait_for(lambda: len(receiver.accepted) == 1 and len(receiver.received) >= 2)
    first, second = receiver.received[:2]
    assert first.key == second.key
    assert first.body == second.body
    assert (first.headers["Parley-Attempt"], second.headers["Parley-Attempt"]) == ("1", "2")
    assert await _queue_empty(cluster)


async def test_a_failing_endpoint_dead_letters_after_max_attempts_and_redrive_delivers(
    cluster: Cluster, receiver: WebhookReceiver
) -> None:
    failing = True

    async def behaviour(_request: Received, _index: int) -> int:
        return 503 if failing else 200

    receiver.behaviour = behaviour
    await _birdy(cluster, receiver, max_attempts=3)
    admin = notification(cluster)
    await publish(cluster.redis_url, "relay", message_waiting(f"{ALICE}/1"))

    letters = await _wait_for_dead_letters(admin, 1)
    [letter] = letters
    assert len(receiver.received) == 3
    assert {request.key for request in receiver.received} == {letter.idempotency_key}
    assert (letter.provider_id, letter.attempts, letter.last_error, letter.type) == (
        "birdy",
        3,
        "http 503",
        "message_waiting",
    )
    assert await _queue_empty(cluster)

    failing = False
    redriven = await admin.RedriveDeadLetters(
        pb.RedriveDeadLettersRequest(dead_letter_ids=[letter.dead_letter_id]), metadata=ADMIN
    )
    assert redriven.redriven == 1
    await receiver.wait_for(lambda: len(receiver.accepted) == 1)
    assert receiver.accepted[0].key == letter.idempotency_key
    assert receiver.accepted[0].headers["Parley-Attempt"] == "1"
    listed = await admin.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=ADMIN)
    assert list(listed.dead_letters) == []


async def test_a_refusing_endpoint_is_dead_lettered_at_once(cluster: Cluster, receiver: WebhookReceiver) -> None:
    async def refuse(_request: Received, _index: int) -> int:
        return 400

    receiver.behaviour = refuse
    await _birdy(cluster, receiver, max_attempts=5)
    await publish(cluster.redis_url, "relay", message_waiting(f"{ALICE}/1"))
    [letter] = await _wait_for_dead_letters(notification(cluster), 1)
    assert (letter.attempts, letter.last_error) == (1, "http 400")
    assert len(receiver.received) == 1


async def test_a_flapping_endpoint_gets_every_event_once_per_key(cluster: Cluster, receiver: WebhookReceiver) -> None:
    async def flapping(_request: Received, index: int) -> int:
        return 500 if index % 3 != 2 else 200  # two failures, then one success, over and over

    receiver.behaviour = flapping
    await _birdy(cluster, receiver, max_attempts=20)
    devices = [f"username:user{n}@birdy/1" for n in range(15)]
    await publish(cluster.redis_url, "relay", *(message_waiting(device) for device in devices))

    def all_accepted() -> bool:
        return {r.document["data"]["address"] for r in receiver.accepted} == set(devices)

    await receiver.wait_for(all_accepted)
    assert await _queue_empty(cluster)
    # Never delivered twice under different keys; every attempt of one event carries one key and one body.
    keys_by_address: dict[str, set[str]] = {}
    bodies_by_key: dict[str, set[bytes]] = {}
    for request in receiver.received:
        keys_by_address.setdefault(request.document["data"]["address"], set()).add(request.key)
        bodies_by_key.setdefault(request.key, set()).add(request.body)
    assert all(len(keys) == 1 for keys in keys_by_address.values())
    assert all(len(bodies) == 1 for bodies in bodies_by_key.values())
    assert len(bodies_by_key) == len(devices)
    # Each event accepted under its one key; an attempt the client gave up on (a timeout on a loaded machine) may
    # have been accepted too, which is what the key is for.
    assert len({r.key for r in receiver.accepted}) == len(devices)
    listed = await notification(cluster).ListDeadLetters(pb.ListDeadLettersRequest(), metadata=ADMIN)
    assert list(listed.dead_letters) == []


async def test_an_event_read_twice_is_delivered_once(cluster: Cluster, receiver: WebhookReceiver) -> None:
    await _birdy(cluster, receiver)
    event = message_waiting(f"{ALICE}/1")
    event.event_id = "ab" * 16
    await publish(cluster.redis_url, "relay", event, event)
    await publish(cluster.redis_url, "relay", message_waiting(f"{ALICE}/2"))
    await receiver.wait_for(lambda: len(receiver.accepted) == 2)
    assert sorted(r.document["data"]["address"] for r in receiver.accepted) == [f"{ALICE}/1", f"{ALICE}/2"]


async def test_unroutable_events_are_acknowledged_and_change_nothing(
    cluster: Cluster, receiver: WebhookReceiver
) -> None:
    await _birdy(cluster, receiver)
    client = aioredis.Redis.from_url(cluster.redis_url)
    await client.xadd("events:{relay}", {"type": "message_waiting", "event": b"\xff\x00garbage"})
    await publish(cluster.redis_url, "relay", message_waiting("not an address"), message_waiting(ALICE))
    await publish(cluster.redis_url, "relay", message_waiting(f"{ALICE}/1"))
    await receiver.wait_for(lambda: len(receiver.accepted) == 1)
    assert receiver.accepted[0].document["data"]["address"] == f"{ALICE}/1"

    async def settled() -> bool:
        pending = await client.xpending("events:{relay}", "notification")
        return pending["pending"] == 0

    await eventually(settled)
    assert await client.xlen("notify:{queue}:dead") == 0
    await client.aclose()


async def test_provider_news_reach_every_other_approved_provider(cluster: Cluster) -> None:
    endpoints = {name: WebhookReceiver() for name in ("gatekeeper", "birdy", "suspended")}
    try:
        await cluster.start_identity()
        keys = {name: await cluster.enlist(name) for name in endpoints}
        await start_notification(cluster)
        for name, endpoint in endpoints.items():
            await register_webhook(cluster, keys[name], await endpoint.start())
        await cluster.identity().SuspendProvider(id_pb.SuspendProviderRequest(provider_id="suspended"), metadata=ADMIN)
        await cluster.enlist("newbie", features=[Feature.FEATURE_TEXT])

        def news(endpoint: WebhookReceiver) -> list[dict[str, object]]:
            return [
                r.document["data"]
                for r in endpoint.accepted
                if r.document["type"] == "provider_available" and r.document["data"]["provider_id"] == "newbie"
            ]

        for name in ("gatekeeper", "birdy"):
            await endpoints[name].wait_for(lambda name=name: bool(news(endpoints[name])))  # type: ignore[misc]
            assert news(endpoints[name]) == [{"provider_id": "newbie", "features": ["FEATURE_TEXT"]}]
        # The suspended provider is not called (its delivery waits in the queue, retried until it is approved or
        # dead-lettered).
        assert news(endpoints["suspended"]) == []
        assert not any(r.document["type"] == "provider_available" for r in endpoints["suspended"].received)
    finally:
        for endpoint in endpoints.values():
            await endpoint.stop()


async def test_identity_key_changes_reach_each_requesters_provider(cluster: Cluster) -> None:
    endpoints = {name: WebhookReceiver() for name in ("gatekeeper", "birdy")}
    try:
        await cluster.start_identity()
        keys = {name: await cluster.enlist(name) for name in endpoints}
        await start_notification(cluster)
        await drained(cluster.redis_url, "identity")
        for name, endpoint in endpoints.items():
            await register_webhook(cluster, keys[name], await endpoint.start())
        requesters = ["username:bob@gatekeeper", "username:carol@birdy", "username:dan@gatekeeper", "username:x@gone"]
        event = Event(identity_key_changed=IdentityKeyChanged(address=f"{ALICE}/1", recent_requesters=requesters))
        await publish(cluster.redis_url, "keys", event)
        for name, expected in (
            ("gatekeeper", ["username:bob@gatekeeper", "username:dan@gatekeeper"]),
            ("birdy", ["username:carol@birdy"]),
        ):
            endpoint = endpoints[name]
            await endpoint.wait_for(lambda endpoint=endpoint: len(endpoint.accepted) == 1)  # type: ignore[misc]
            document = endpoint.accepted[0].document
            assert document["type"] == "identity_key_changed"
            assert document["data"] == {"address": f"{ALICE}/1", "requesters": expected}
    finally:
        for endpoint in endpoints.values():
            await endpoint.stop()


async def _wait_for_dead_letters(
    admin: notification_pb2_grpc.NotificationServiceStub, count: int
) -> list[pb.DeadLetter]:
    letters: list[pb.DeadLetter] = []

    async def enough() -> bool:
        nonlocal letters
        letters = list((await admin.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=ADMIN)).dead_letters)
        return len(letters) >= count

    await eventually(enough)
    return letters


async def _queue_empty(cluster: Cluster) -> bool:
    client = redis_client(cluster.redis_url)

    async def empty() -> bool:
        return await client.zcard("notify:{queue}:due") == 0 and await client.hlen("notify:{queue}:depth") == 0

    try:
        await eventually(empty)
        return True
    finally:
        await client.aclose()


async def test_taking_an_event_in_continues_its_trace(
    cluster: Cluster, receiver: WebhookReceiver, spans: InMemorySpanExporter
) -> None:
    await _birdy(cluster, receiver)
    with cluster.telemetry.tracer("tests").start_as_current_span("relay stores a message") as parent:
        await publish(cluster.redis_url, "relay", message_waiting(f"{ALICE}/1"))
    await receiver.wait_for(lambda: len(receiver.accepted) == 1)
    taken = [span for span in spans.get_finished_spans() if span.name == "notification take event"]
    assert any(
        span.context.trace_id == parent.get_span_context().trace_id
        and span.attributes is not None
        and span.attributes.get("parley.event.type") == "message_waiting"
        for span in taken
    )
