"""The kill switch at notification: no webhook call reaches a provider more than a second after its suspension,
while other providers keep being called. Real identity and notification services, real Redis, a real endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from support.cluster import ADMIN, Cluster
from support.notification import Received, WebhookReceiver, drained, message_waiting, publish, start_notification

from parley.identity.v1 import identity_pb2 as id_pb
from parley.notification.v1 import notification_pb2 as pb
from parley.notification.v1 import notification_pb2_grpc

KILL_SWITCH_S = 1.0
"""The promise: deliveries stop within one second of the suspension."""


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    endpoint = WebhookReceiver()
    yield endpoint
    await endpoint.stop()


async def test_deliveries_to_a_suspended_provider_stop_within_a_second(
    cluster: Cluster, receiver: WebhookReceiver
) -> None:
    arrivals: list[tuple[str, float]] = []

    async def record(request: Received, _index: int) -> int:
        arrivals.append((request.path, time.monotonic()))
        return 200

    receiver.behaviour = record
    await cluster.start_identity()
    keys = {name: await cluster.enlist(name) for name in ("gatekeeper", "birdy", "robin")}
    await start_notification(cluster)
    await drained(cluster.redis_url, "identity")
    hook = (await receiver.start()).removesuffix("/hook")
    stub = notification_pb2_grpc.NotificationServiceStub(cluster.channel("notification"))
    for name in ("birdy", "robin"):
        await stub.RegisterWebhook(pb.RegisterWebhookRequest(url=f"{hook}/{name}"), metadata=keys[name].auth(name))

    async def wake_both(round_: int) -> None:
        await publish(
            cluster.redis_url,
            "relay",
            message_waiting(f"username:u{round_}@birdy/1"),
            message_waiting(f"username:u{round_}@robin/1"),
        )

    await wake_both(0)
    await receiver.wait_for(lambda: {path for path, _ in arrivals} == {"/birdy", "/robin"})
    await cluster.identity().SuspendProvider(id_pb.SuspendProviderRequest(provider_id="birdy"), metadata=ADMIN)
    suspended_at = time.monotonic()
    # Keep waking both providers' devices until robin has been called for wake-ups sent after the second passed.
    rounds = 1
    async with asyncio.timeout(20):
        while not any(path == "/robin" and at > suspended_at + KILL_SWITCH_S for path, at in arrivals):
            await wake_both(rounds)
            rounds += 1
            await asyncio.sleep(0.05)
    late = [at - suspended_at for path, at in arrivals if path == "/birdy" and at > suspended_at + KILL_SWITCH_S]
    assert late == [], f"birdy was called {late} s after its suspension"
