"""Edits, deletes for everyone and disappearing messages through the SDK and the real relay.

The rules: an edit or delete counts only from the target's author and within the window the receiving device's
provider declared (counted between the relay's acceptance times); a delete whose target has not been processed
suppresses the target when its copy arrives later; a disappearing timer is honoured by the message store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from support.cluster import Cluster
from support.relay import start_world, text

from parley.content.v1 import content_pb2
from parley_sdk import ContentRefusedError, DeviceClient, Incoming, Outcome, Received, Refusal
from parley_stanza import Message

_DEFAULT_EDIT_WINDOW_S = 900
_DEFAULT_DELETE_WINDOW_S = 2 * 24 * 3600


async def _incoming(device: DeviceClient, count: int) -> list[Incoming]:
    """The next ``count`` messages on a fresh stream, acknowledged (not processed)."""
    got: list[Incoming] = []
    async with device.connect() as connection:
        while len(got) < count:
            async with asyncio.timeout(10):
                incoming = await connection.receive()
            await connection.ack(incoming.delivery_id)
            if isinstance(incoming.stanza, Message):
                got.append(incoming)
    return got


async def _process(device: DeviceClient, count: int) -> list[Received]:
    return [await device.process(incoming) for incoming in await _incoming(device, count)]


async def test_an_edit_from_the_author_replaces_the_text_everywhere(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben, ana_phone, ana_laptop = world["ben"], world["ana_phone"], world["ana_laptop"]
    await ben.send_content(ana_phone.user, text("lunch at 12?"), message_id="m1")
    await ben.send_edit(ana_phone.user, "m1", "lunch at 1?", message_id="m1-edit")
    for device in (ana_phone, ana_laptop):
        new, edited = await _process(device, 2)
        assert (new.outcome, edited.outcome) == (Outcome.NEW, Outcome.EDITED)
        shown = device.message(ben.user, "m1")
        assert shown is not None
        assert shown.edited
        assert shown.content is not None
        assert shown.content.text.body == "lunch at 1?"
    own = ben.message(ben.user, "m1")
    assert own is not None
    assert own.content is not None
    assert own.content.text.body == "lunch at 1?"
    await world.close()


async def test_an_edit_or_delete_from_another_user_is_rejected(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben, cleo, ana = world["ben"], world["cleo_phone"], world["ana_phone"]
    await ben.send_content(ana.user, text("meet at the station"), message_id="m1")
    # Cleo's SDK refuses to send it: she has no message m1.
    with pytest.raises(ContentRefusedError) as refused:
        await cleo.send_edit(ana.user, "m1", "meet at the airport")
    assert refused.value.refusal is Refusal.UNKNOWN_TARGET
    # A client without the SDK's check sends it anyway: Ana's device rejects it.
    for change in (
        content_pb2.Content(sent_at_ms=1, edit=content_pb2.Edit(target_message_id="m1", text="meet at the airport")),
        content_pb2.Content(sent_at_ms=1, delete=content_pb2.Delete(target_message_id="m1")),
    ):
        await cleo.send(await cleo.encrypt(ana.user, change))
    new, edit, delete = await _process(ana, 3)
    assert new.outcome is Outcome.NEW
    for rejected in (edit, delete):
        assert (rejected.outcome, rejected.refusal) == (Outcome.REJECTED, Refusal.NOT_AUTHOR)
    shown = ana.message(ben.user, "m1")
    assert shown is not None
    assert shown.content is not None
    assert shown.content.text.body == "meet at the station"
    assert not shown.edited
    await world.close()


async def test_changes_after_the_providers_window_are_refused_on_both_ends(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    await ben.send_content(ana.user, text("see you at 8"), message_id="m1")
    await ben.send_edit(ana.user, "m1", "see you at 9", message_id="e1")
    await ben.send_delete(ana.user, "m1", message_id="d1")
    target, edit, delete = await _incoming(ana, 3)
    assert (await ana.process(target)).outcome is Outcome.NEW
    # The relay's acceptance times are what count: an edit accepted past the window is refused, one just inside
    # is applied; the same for the delete with its own window.
    late_edit = dataclasses.replace(
        edit, server_timestamp_ms=target.server_timestamp_ms + _DEFAULT_EDIT_WINDOW_S * 1000 + 1
    )
    processed = await ana.process(late_edit)
    assert (processed.outcome, processed.refusal) == (Outcome.REJECTED, Refusal.WINDOW_PASSED)
    late_delete = dataclasses.replace(
        delete, server_timestamp_ms=target.server_timestamp_ms + _DEFAULT_DELETE_WINDOW_S * 1000
    )
    assert (await ana.process(late_delete)).outcome is Outcome.DELETED  # at the window's edge: still in
    # The sender's SDK refuses before sending once its clock is past the recipient provider's window.
    cleo = world["cleo_phone"]
    await cleo.send_content(ana.user, text("typo heer"), message_id="c1")
    later = DeviceClient(cleo.backend, cleo.address, cleo.store, messages=cleo.messages,
                         clock=lambda: time.time() + _DEFAULT_EDIT_WINDOW_S + 60)  # fmt: skip
    with pytest.raises(ContentRefusedError) as refused:
        await later.send_edit(ana.user, "c1", "typo here")
    assert refused.value.refusal is Refusal.WINDOW_PASSED
    assert "too late" in refused.value.reason
    await world.close()


async def test_a_deleted_message_still_waiting_in_a_mailbox_is_never_shown(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    await ben.send_content(ana.user, text("oops, wrong chat"), message_id="m1")
    await ben.send_delete(ana.user, "m1", message_id="d1")
    # Ana's device gets both but, before it processes the target, only the delete is processed and acknowledged
    # (the target's copy stays in the mailbox, as after a crash or a slow consumer).
    async with ana.connect() as connection:
        async with asyncio.timeout(10):
            target = await connection.receive()
            delete = await connection.receive()
        assert [target.stanza.id, delete.stanza.id] == ["m1", "d1"]
        deleted = await ana.process(delete)
        await connection.ack(delete.delivery_id)
    assert deleted.outcome is Outcome.DELETED
    assert deleted.target is None  # not here yet: remembered
    (again,) = await _incoming(ana, 1)  # the waiting copy, delivered again
    assert again.stanza.id == "m1"
    assert (await ana.process(again)).outcome is Outcome.SUPPRESSED
    shown = ana.message(ben.user, "m1")
    assert shown is not None
    assert shown.deleted
    assert (await ana.process(again)).outcome is Outcome.DUPLICATE
    await world.close()


async def test_a_delete_removes_the_message_on_every_device(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben, ana_phone, ana_laptop = world["ben"], world["ana_phone"], world["ana_laptop"]
    await ana_phone.send_content(ben.user, text("my pin is 1234"), message_id="m1")
    await ana_phone.send_delete(ben.user, "m1", message_id="d1")
    for device in (ben, ana_laptop):
        outcomes = [r.outcome for r in await _process(device, 2)]
        assert outcomes == [Outcome.NEW, Outcome.DELETED]
        gone = device.message(ana_phone.user, "m1")
        assert gone is not None
        assert gone.deleted
        assert gone.plaintext == b""
    own = ana_phone.message(ana_phone.user, "m1")
    assert own is not None
    assert own.deleted
    await world.close()


async def test_disappearing_messages_go_after_their_timer(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    offset = [0.0]
    ana_later = DeviceClient(ana.backend, ana.address, ana.store, messages=ana.messages,
                             clock=lambda: time.time() + offset[0])  # fmt: skip
    await ben.set_disappearing_timer(ana.user, 60, message_id="timer")
    await ben.send_content(ana.user, text("this goes away"), message_id="m1")
    timer, message = await _process(ana_later, 2)
    assert timer.outcome is Outcome.TIMER_CHANGED
    assert ana.messages.chat_timer(ben.user) == 60
    assert message.content is not None
    assert message.content.expire_timer_seconds == 60  # Ben's SDK applied the chat's timer
    # Unread, it stays; read, it goes 60 seconds later.
    offset[0] = 3600
    assert ana_later.message(ben.user, "m1").content is not None
    read = ana_later.mark_read(ben.user, "m1")
    assert read is not None
    offset[0] = 3600 + 59
    assert ana_later.message(ben.user, "m1").content is not None
    offset[0] = 3600 + 61
    assert ana_later.message(ben.user, "m1").deleted
    # Ben's own copy counts from sending.
    ben_later = DeviceClient(ben.backend, ben.address, ben.store, messages=ben.messages,
                             clock=lambda: time.time() + 61)  # fmt: skip
    assert ben_later.message(ben.user, "m1").deleted
    await world.close()
