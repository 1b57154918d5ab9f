"""Mutes end to end: a user mutes a chat or a provider (for a time or for ever); messages still arrive, and the
wake-ups notification sends for them are silent (``alert: false``). Real identity, key directory, relay and
notification on a real Redis, a real webhook endpoint, and every message counted at the other end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from support.cluster import Cluster
from support.notification import Received, WebhookReceiver, drained, notification, start_notification
from support.relay import World, start_world, text

from parley.notification.v1 import notification_pb2 as pb
from parley_sdk import DeviceClient
from parley_stanza import Message


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    endpoint = WebhookReceiver()
    yield endpoint
    await endpoint.stop()


async def _world(cluster: Cluster, receiver: WebhookReceiver, **notification_settings: object) -> World:
    # No cache at the relay: each send asks identity, so a wake-up follows the mute set just before it (the
    # mute_changed event that drops cached answers is tested with the resolver itself).
    world = await start_world(cluster, recipient_cache_s=0)
    await start_notification(cluster, **notification_settings)
    await drained(cluster.redis_url, "identity")
    gatekeeper = world.backends["gatekeeper"]
    await notification(cluster).RegisterWebhook(
        pb.RegisterWebhookRequest(url=await receiver.start()), metadata=gatekeeper.credentials("gatekeeper")
    )
    return world


def _wakeups(receiver: WebhookReceiver) -> list[Received]:
    return [r for r in receiver.accepted if r.document["type"] == "message_waiting"]


async def _alerts_after(
    receiver: WebhookReceiver, sender: DeviceClient, recipient: DeviceClient, body: str
) -> set[bool]:
    """Sends one message and returns the ``alert`` flags of the wake-ups of both of the recipient's devices."""
    seen = len(_wakeups(receiver))
    await sender.send_content(recipient.user, text(body))
    await receiver.wait_for(lambda: len(_wakeups(receiver)) >= seen + 2)
    new = _wakeups(receiver)[seen:]
    assert sorted(r.document["data"]["address"] for r in new) == [f"{recipient.user}/1", f"{recipient.user}/2"]
    return {r.document["data"]["alert"] for r in new}


async def _bodies(device: DeviceClient, count: int) -> list[str]:
    """The bodies of the next ``count`` messages ``device`` receives (acknowledged)."""
    bodies: list[str] = []
    async with device.connect() as stream, asyncio.timeout(20):
        while len(bodies) < count:
            incoming = await stream.receive()
            await stream.ack(incoming.delivery_id)
            if isinstance(incoming.stanza, Message):
                bodies.append(device.decrypt(incoming.stanza).content.text.body)
    return bodies


async def test_muted_chats_and_providers_wake_silently(cluster: Cluster, receiver: WebhookReceiver) -> None:
    world = await _world(cluster, receiver)
    ana, ben, cleo = world["ana_phone"], world["ben"], world["cleo_phone"]

    mute = await ana.mute(peer=ben.address)  # a device address names its user
    assert (mute.peer, mute.until_ms) == (str(ben.user), 0)
    assert await _alerts_after(receiver, ben, ana, "muted chat") == {False}
    assert await _alerts_after(receiver, cleo, ana, "other chat") == {True}

    # A whole provider, for a minute; the chat's own mute lifted.
    before = int(time.time() * 1000)
    await ana.mute(provider="birdy", duration_s=60)
    assert await ana.unmute(peer=ben.user)
    assert not await ana.unmute(peer=ben.user)
    [listed] = await ana.mutes()
    assert listed.provider_id == "birdy"
    assert before + 60_000 <= listed.until_ms <= int(time.time() * 1000) + 60_000
    assert await _alerts_after(receiver, cleo, ana, "muted provider") == {False}

    assert await ana.unmute(provider="birdy")
    assert await ana.mutes() == []
    assert await _alerts_after(receiver, cleo, ana, "unmuted") == {True}

    # Muted or not, every message arrived.
    assert sorted(await _bodies(ana, 4)) == sorted(["muted chat", "other chat", "muted provider", "unmuted"])
    await world.close()


async def test_a_mute_for_a_time_ends_by_itself(cluster: Cluster, receiver: WebhookReceiver) -> None:
    world = await _world(cluster, receiver)
    ana, ben = world["ana_phone"], world["ben"]
    mute = await ana.mute(peer=ben.user, duration_s=1)
    assert await _alerts_after(receiver, ben, ana, "within the second") == {False}
    await asyncio.sleep(max(0.0, mute.until_ms / 1000 - time.time()) + 0.05)
    assert await ana.mutes() == []
    assert await _alerts_after(receiver, ben, ana, "after it") == {True}
    assert sorted(await _bodies(ana, 2)) == ["after it", "within the second"]
    await world.close()


async def test_silent_and_alerting_wakeups_coalesce_apart(cluster: Cluster, receiver: WebhookReceiver) -> None:
    # A window far longer than the test: only each kind's first wake-up goes out at once.
    world = await _world(cluster, receiver, coalesce_window_ms=600_000)
    ana, ben, cleo = world["ana_phone"], world["ben"], world["cleo_phone"]
    await ana.mute(peer=ben.user)
    assert await _alerts_after(receiver, ben, ana, "muted") == {False}
    # Merged with the silent one, this alert would wait for the window's end, and then only as a silent wake-up.
    assert await _alerts_after(receiver, cleo, ana, "alerting") == {True}
    assert sorted(await _bodies(ana, 2)) == ["alerting", "muted"]
    await world.close()
