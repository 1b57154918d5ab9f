"""Franking by default: every message the SDK sends is franked, the relay stamps it, the recipient's SDK keeps what
a report needs, and reporting is one call that moderation verifies (through identity, key directory, relay and
moderation, with real Signal sessions)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import pytest
from support.cluster import Cluster
from support.moderation import FRANKING_KEY, start_moderation
from support.relay import World, start_world, text

from parley_sdk import DeviceClient, Outcome, Received
from parley_stanza import Message


async def _start(cluster: Cluster) -> World:
    await cluster.start_identity()
    await start_moderation(cluster)
    return await start_world(
        cluster, moderation_target=cluster.target("moderation"), franking_key=base64.b64encode(FRANKING_KEY).decode()
    )


async def _process_one(device: DeviceClient) -> Received:
    async with device.connect() as connection:
        while True:
            async with asyncio.timeout(10):
                incoming = await connection.receive()
            await connection.ack(incoming.delivery_id)
            if isinstance(incoming.stanza, Message):
                return await device.process(incoming)


async def test_a_received_message_is_reported_in_one_call_and_verifies(cluster: Cluster) -> None:
    world = await _start(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    await ben.send_content(ana.user, text("buy cheap watches"), message_id="spam-1")
    received = await _process_one(ana)
    assert received.outcome is Outcome.NEW
    assert received.message.franking is not None  # franked without being asked
    assert received.message.franking.stamp is not None
    report = await ana.report(ben.user, "spam-1", "spam")
    assert report.verified
    assert report.report_id
    await world.close()


async def test_a_report_of_altered_content_does_not_verify(cluster: Cluster) -> None:
    world = await _start(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    await ben.send_content(ana.user, text("see you tomorrow"), message_id="m1")
    await _process_one(ana)
    kept = ana.messages.get(ben.user, "m1")
    assert kept is not None
    # A reporter who puts words in Ben's mouth is caught: the commitment covers the exact plaintext.
    forged = kept.plaintext.replace(b"tomorrow", b"never!!!")
    ana.messages.put(dataclasses.replace(kept, plaintext=forged))
    report = await ana.report(ben.user, "m1", "abuse")
    assert not report.verified
    await world.close()


async def test_own_deleted_and_unknown_messages_cannot_be_reported(cluster: Cluster) -> None:
    world = await _start(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    await ben.send_content(ana.user, text("oops"), message_id="m1")
    await ben.send_delete(ana.user, "m1", message_id="d1")
    await _process_one(ana)
    await _process_one(ana)
    for author, message_id in ((ben.user, "m1"), (ben.user, "nothing"), (ana.user, "d1")):
        with pytest.raises(ValueError, match="to report"):
            await ana.report(author, message_id, "spam")
    with pytest.raises(ValueError, match="to report"):
        await ben.report(ben.user, "m1", "spam")  # his own
    await world.close()
