"""End-to-end delivery through the relay: real services, real Redis, real Signal sessions, every message counted."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster
from support.relay import World, raw_message, start_world, text

from parley.events.v1.events_pb2 import Event
from parley_crypto import InMemoryProtocolStore
from parley_runtime import redis_keys
from parley_sdk import DeviceClient, Incoming
from parley_stanza import ChatState, ChatStateKind, Message, Receipt, ReceiptType, decode, encode


async def _drain(device: DeviceClient, connection: object, expected: int, inbox: dict[str, list[str]]) -> None:
    """Receives, decrypts and acknowledges until ``expected`` messages arrived (receipts are acknowledged too)."""
    from parley_sdk import RelayConnection  # noqa: PLC0415 -- for the type only

    assert isinstance(connection, RelayConnection)
    received = 0
    while received < expected:
        async with asyncio.timeout(10):
            incoming: Incoming = await connection.receive()
        if isinstance(incoming.stanza, Message):
            inbox[str(device.address)].append(device.decrypt(incoming.stanza).content.text.body)
            received += 1
        await connection.ack(incoming.delivery_id)


async def _mailbox_lengths(redis_url: str, world: World) -> dict[str, int]:
    client = aioredis.Redis.from_url(redis_url)
    lengths = {}
    for name, device in world.devices.items():
        lengths[name] = await client.xlen(redis_keys.mailbox(str(device.user), device.device_id))
    await client.aclose()
    return lengths


async def test_two_providers_three_users_every_message_exactly_once(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, ben, cleo = world["ana_phone"].user, world["ben"].user, world["cleo_phone"].user
    script = [
        ("ben", ana, "ben to ana 1"),
        ("cleo_phone", ana, "cleo to ana"),
        ("ana_phone", ben, "ana to ben"),
        ("ana_laptop", cleo, "ana (laptop) to cleo"),
        ("cleo_tablet", ana, "cleo (tablet) to ana"),
        ("ben", ana, "ben to ana 2"),
    ]
    expected: dict[str, list[str]] = defaultdict(list)
    for sender, recipient, body in script:
        for name, device in world.devices.items():
            if name != sender and device.user in (recipient, world[sender].user):
                expected[str(device.address)].append(body)
        await world[sender].send_content(recipient, text(body))

    inbox: dict[str, list[str]] = defaultdict(list)
    for device in world.devices.values():
        async with device.connect() as connection:
            await _drain(device, connection, len(expected[str(device.address)]), inbox)
            await connection.drained.wait()
    assert inbox == expected
    assert sum(len(bodies) for bodies in inbox.values()) == 15
    # Every message was acknowledged, so what is left are the delivery receipts those acks produced for
    # senders whose streams had already closed.
    for _ in range(100):
        leftovers = await _leftover_kinds(redis_url, world)
        if "Message" not in leftovers:
            break
        await asyncio.sleep(0.05)
    assert leftovers == {"Receipt"}
    await world.close()


async def _leftover_kinds(redis_url: str, world: World) -> set[str]:
    client = aioredis.Redis.from_url(redis_url)
    kinds = set()
    for device in world.devices.values():
        for _, fields in await client.xrange(redis_keys.mailbox(str(device.user), device.device_id)):
            kinds.add(type(decode(fields[b"s"])).__name__)
    await client.aclose()
    return kinds


async def test_live_delivery_in_order_and_delivery_receipts(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    inbox: dict[str, list[str]] = defaultdict(list)
    async with ana.connect() as ana_stream, ben.connect() as ben_stream:
        await ana_stream.drained.wait()
        sent = [f"live {i}" for i in range(20)]
        for body in sent:
            await ben.send_content(ana.user, text(body))
        await _drain(ana, ana_stream, 20, inbox)
        assert inbox[str(ana.address)] == sent
        receipts: set[str] = set()
        while len(receipts) < 20:
            async with asyncio.timeout(10):
                incoming = await ben_stream.receive()
            if isinstance(incoming.stanza, Receipt):
                assert incoming.stanza.type is ReceiptType.DELIVERY
                assert incoming.stanza.sender == ana.address
                receipts.update(incoming.stanza.message_ids)
            await ben_stream.ack(incoming.delivery_id)
        assert len(receipts) == 20
    await world.close()


async def test_offline_device_catches_up_and_unacked_stanzas_come_back(cluster: Cluster) -> None:
    world = await start_world(cluster)
    laptop, ben = world["ana_laptop"], world["ben"]
    for i in range(5):
        await ben.send_content(laptop.user, text(f"while away {i}"))
    async with laptop.connect() as first:
        seen = [await first.receive() for _ in range(5)]
        # Acknowledge only the first two, then drop the connection.
        await first.ack(seen[0].delivery_id, seen[1].delivery_id)
        await asyncio.sleep(0.2)
    async with laptop.connect() as second:
        again: list[Incoming] = []
        while len(again) < 3:
            async with asyncio.timeout(10):
                incoming = await second.receive()
            again.append(incoming)
            await second.ack(incoming.delivery_id)
        await second.drained.wait()
    assert [i.delivery_id for i in again] == [s.delivery_id for s in seen[2:]]
    bodies = [laptop.decrypt(i.stanza).content.text.body for i in seen[:2] + again]
    assert bodies == [f"while away {i}" for i in range(5)]
    await world.close()


async def test_resent_stanza_is_stored_once(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    message = await ben.encrypt(ana.user, text("once"), message_id="dup-1")
    first = await ben.send(message)
    second = await ben.send(message)
    assert not first.duplicate
    assert second.duplicate
    assert second.server_timestamp_ms == first.server_timestamp_ms
    lengths = await _mailbox_lengths(redis_url, world)
    assert lengths["ana_phone"] == lengths["ana_laptop"] == 1
    await world.close()


async def test_typing_reaches_only_open_streams_and_is_never_stored(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    async with ana.connect() as stream:
        await stream.drained.wait()
        await ben.send(ChatState(id="t1", sender=ben.address, recipient=ana.user, ts=1, state=ChatStateKind.TYPING))
        async with asyncio.timeout(10):
            incoming = await stream.receive()
    assert incoming.delivery_id == ""
    assert isinstance(incoming.stanza, ChatState)
    assert incoming.stanza.state is ChatStateKind.TYPING
    assert await _mailbox_lengths(redis_url, world) == dict.fromkeys(world.devices, 0)
    await world.close()


async def test_a_stream_on_one_replica_gets_what_another_replica_accepted(cluster: Cluster) -> None:
    world = await start_world(cluster, relays=2)
    ana, ben = world["ana_phone"], world["ben"]
    # Ben's backend talks to the second replica; Ana streams from the first.
    from parley_sdk import ProviderBackend  # noqa: PLC0415

    birdy = world.backends["birdy"]
    other = ProviderBackend(
        "birdy",
        birdy._signing_key,
        identity_target=cluster.target("identity"),
        keydir_target=cluster.target("keydir"),
        relay_target=cluster.target("relay-1"),
    )
    ben.backend = other
    inbox: dict[str, list[str]] = defaultdict(list)
    async with ana.connect() as stream:
        await stream.drained.wait()
        for i in range(5):
            await ben.send_content(ana.user, text(f"via replica 2: {i}"))
        await _drain(ana, stream, 5, inbox)
    assert inbox[str(ana.address)] == [f"via replica 2: {i}" for i in range(5)]
    await other.close()
    await world.close()


@pytest.mark.parametrize("size", [3])
async def test_pipelined_sends_on_the_stream_get_one_result_each(cluster: Cluster, size: int) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    from parley_stanza import encode  # noqa: PLC0415

    good = [encode(await ben.encrypt(ana.user, text(f"batch {i}"), message_id=f"b{i}")) for i in range(size)]
    async with ben.connect() as stream:
        results = await stream.send([good[0], b"<not-a-stanza", good[1], good[2]])
    assert [r.code for r in results.results] == [0, 3, 0, 0]
    assert results.results[1].reason == "MALFORMED_STANZA"
    assert [r.message_id for r in results.results if r.code == 0] == ["b0", "b1", "b2"]
    await world.close()


async def test_offline_devices_get_a_message_waiting_event(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    async with ana.connect() as stream:
        await stream.drained.wait()
        await ben.send_content(ana.user, text("are you there?"))
        async with asyncio.timeout(10):
            await stream.receive()
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{relay}")
    await client.aclose()
    waiting = [Event.FromString(fields[b"event"]).message_waiting for _, fields in entries]
    # Only the laptop had no stream; the phone was online.
    assert [(w.address, w.pending) for w in waiting] == [(str(world["ana_laptop"].address), 1)]
    await world.close()


async def test_a_frame_to_offline_devices_announces_every_copy(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    devices = [ana.address, world["ana_laptop"].address]
    frame = [encode(raw_message(ben.address, ana.user, devices, f"offline-{i}")) for i in range(3)]
    async with ben.connect() as stream:
        assert [r.code for r in (await stream.send(frame)).results] == [0, 0, 0]
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{relay}")
    await client.aclose()
    waiting = [Event.FromString(fields[b"event"]).message_waiting for _, fields in entries]
    # Both of Ana's devices are offline: each copy is announced, with the mailbox length it left, in order.
    assert [(w.address, w.pending) for w in waiting] == [
        (str(device), pending) for pending in (1, 2, 3) for device in devices
    ]
    await world.close()


async def test_read_receipts_reach_the_sender_and_the_readers_other_devices(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana_phone, ana_laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    sent = await ben.send_content(ana_phone.user, text("read me"))
    read = Receipt(
        id="r1",
        sender=ana_phone.address,
        recipient=ben.user,
        ts=1,
        type=ReceiptType.READ,
        message_ids=(sent.message_id,),
    )
    await ana_phone.send(read)
    for device in (ben, ana_laptop):
        async with device.connect() as stream:
            stanzas: list[object] = []
            while not any(isinstance(s, Receipt) for s in stanzas):
                async with asyncio.timeout(10):
                    incoming = await stream.receive()
                stanzas.append(incoming.stanza)
                await stream.ack(incoming.delivery_id)
        receipt = next(s for s in stanzas if isinstance(s, Receipt))
        assert receipt.type is ReceiptType.READ
        assert receipt.message_ids == (sent.message_id,)
    await world.close()


async def test_signed_prekey_rotation_keeps_new_sessions_working(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana, cleo = world["ana_phone"], world["cleo_phone"]
    store = ana.store
    assert isinstance(store, InMemoryProtocolStore)
    before = set(store.signed_prekeys)
    rotated = await ana.rotate_signed_prekey()
    # The new key is kept beside the old one, so prekey messages built on either still decrypt.
    assert rotated not in before
    assert set(store.signed_prekeys) == before | {rotated}
    await cleo.send_content(ana.user, text("after rotation"))
    async with ana.connect() as stream:
        async with asyncio.timeout(10):
            incoming = await stream.receive()
    assert isinstance(incoming.stanza, Message)
    assert ana.decrypt(incoming.stanza).content.text.body == "after rotation"
    await world.close()
