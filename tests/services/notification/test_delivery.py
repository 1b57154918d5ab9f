"""Webhook deliveries end to end: real identity and notification services, real Redis, a real HTTP endpoint."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from support.cluster import Cluster, ProviderKeys
from support.notification import (
    WebhookReceiver,
    message_waiting,
    notification,
    publish,
    register_webhook,
    start_notification,
)

from parley.notification.v1 import notification_pb2 as pb
from parley_notification import signature

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
    secret = await register_webhook(cluster, birdy, await receiver.start())
    return birdy, secret


async def test_message_waiting_reaches_the_devices_provider_signed(
    cluster: Cluster, receiver: WebhookReceiver
) -> None:
    birdy, secret = await _birdy(cluster, receiver)
    [device] = await cluster.register_user(birdy, ALICE)
    await notification(cluster).RegisterPushTarget(
        pb.RegisterPushTargetRequest(push_token="tok-123"), metadata=birdy.auth(ALICE, 1)
    )
    [event_id] = await publish(cluster.redis_url, "relay", message_waiting(device, pending=3))

    await receiver.wait_for(lambda: any(r.document["type"] == "message_waiting" for r in receiver.accepted))
    [request] = [r for r in receiver.accepted if r.document["type"] == "message_waiting"]
    headers = request.headers
    assert signature.verify(
        secret, headers["Parley-Timestamp"], request.body, headers["Parley-Signature"], now=time.time()
    )
    assert not signature.verify(
        b"\x00" * 32, headers["Parley-Timestamp"], request.body, headers["Parley-Signature"], now=time.time()
    )
    assert headers["Content-Type"] == "application/json"
    assert headers["Parley-Event-Type"] == "message_waiting"
    assert headers["Parley-Attempt"] == "1"
    document = request.document
    assert document["id"] == request.key
    assert document["coalesced"] == 0
    # Addresses, push token and a count: nothing else (no content, no names).
    assert document["data"] == {"address": device, "pending": 3, "push_token": "tok-123"}
    assert event_id not in request.body.decode()
