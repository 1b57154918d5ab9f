"""Consent binds both ways: a user whose own third-party chats are off or disabled cannot write to other providers'
users (messages, receipts, typing, key fetches), still reads what waits for it, and writes again once it turns
them back on. Real identity, key directory and relay on a real Redis; every message counted at the other end."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support.cluster import Cluster
from support.relay import World, raw_message, start_world, text

from parley.identity.v1 import identity_pb2 as id_pb
from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_sdk import DeviceClient, Incoming, RelayConnection, error_reason
from parley_stanza import Address, ChatState, ChatStateKind, Message, Receipt, ReceiptType, encode

WAIT_S = 10.0
"""Bound of waits for what should take milliseconds."""


async def _disable(device: DeviceClient) -> None:
    await device.backend.identity.DisableThirdPartyChats(
        id_pb.DisableThirdPartyChatsRequest(), metadata=device.backend.credentials(str(device.user))
    )


async def _send_raw(world: World, device: DeviceClient, data: bytes) -> pb.SendResponse:
    relay = relay_pb2_grpc.RelayServiceStub(world.cluster.channel("relay"))
    response: pb.SendResponse = await relay.Send(
        pb.SendRequest(stanza=data), metadata=device.backend.credentials(str(device.user), device.device_id)
    )
    return response


async def _messages(connection: RelayConnection, count: int) -> list[Incoming]:
    """The next ``count`` stored deliveries of ``connection`` (acknowledged), skipping receipts."""
    received: list[Incoming] = []
    async with asyncio.timeout(WAIT_S):
        while len(received) < count:
            incoming = await connection.receive()
            await connection.ack(incoming.delivery_id)
            if isinstance(incoming.stanza, Message):
                received.append(incoming)
    return received


async def _refused(device: DeviceClient, recipient: DeviceClient) -> tuple[grpc.aio.AioRpcError, list[str]]:
    """Sends from ``device`` until the relay refuses; the refusal and the bodies it accepted before that.

    Identity's consent_changed event drops the relay's cached answer within milliseconds (the cache's second at
    worst), so a send racing the event may still be accepted; those are counted, not lost.
    """
    accepted: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            body = f"racing {len(accepted)}"
            try:
                await device.send_content(recipient.user, text(body))
            except grpc.aio.AioRpcError as error:
                return error, accepted
            accepted.append(body)


async def test_a_disabled_user_reads_but_cannot_write_until_it_turns_chats_on(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana, laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    await ana.send_content(ben.user, text("hi"))  # a session and a cached "reachable" at the relay
    await ben.send_content(ana.user, text("before"))
    await _disable(ana)

    refused, racing = await _refused(ana, ben)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused) == ("SENDER_CONSENT_MISSING", {"consent_state": "DISABLED"})
    # Ben cannot write to her either: the chat is read-only both ways.
    with pytest.raises(grpc.aio.AioRpcError) as read_only:
        await ben.send_content(ana.user, text("still there?"))
    assert error_reason(read_only.value)[0] == "READ_ONLY_CHAT"

    async with ana.connect() as stream:
        # History stays readable: what waited is delivered.
        [waiting] = await _messages(stream, 1)
        assert ana.decrypt(waiting.stanza).content.text.body == "before"
        receipt = Receipt("rr1", ana.address, ben.user, 1, ReceiptType.READ, (waiting.stanza.id,))
        typing = ChatState("ty1", ana.address, ben.user, 1, ChatStateKind.TYPING)
        results = (await stream.send([encode(receipt), encode(typing)])).results
    assert [(r.code, r.reason, r.metadata["consent_state"]) for r in results] == [
        (grpc.StatusCode.FAILED_PRECONDITION.value[0], "SENDER_CONSENT_MISSING", "DISABLED")
    ] * 2
    # Her other device is held to the same consent, and so is the key directory it fetches ben's keys from.
    with pytest.raises(grpc.aio.AioRpcError) as from_laptop:
        await laptop.send_content(ben.user, text("from the laptop"))
    assert error_reason(from_laptop.value)[0] == "SENDER_CONSENT_MISSING"

    await ana.enable_third_party_chats(["birdy"])
    await ana.send_content(ben.user, text("back"))
    await ben.send_content(ana.user, text("welcome back"))
    async with ben.connect() as ben_stream:
        received = await _messages(ben_stream, 2 + len(racing))
    assert [ben.decrypt(m.stanza).content.text.body for m in received] == ["hi", *racing, "back"]
    async with ana.connect() as stream:
        [welcome] = await _messages(stream, 1)
    assert ana.decrypt(welcome.stanza).content.text.body == "welcome back"
    await world.close()


async def test_a_user_who_never_opted_in_writes_only_to_its_own_provider(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana, ben = world["ana_phone"], world["ben"]
    dora = await DeviceClient.register(ana.backend, Address.parse("username:dora@gatekeeper"), new_user=True)
    await dora.publish_keys(5)

    # The key directory refuses her the bundles of a third-party user, with the same reason...
    with pytest.raises(grpc.aio.AioRpcError) as keys:
        await dora.send_content(ben.user, text("hi ben"))
    assert keys.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(keys.value) == ("SENDER_CONSENT_MISSING", {"consent_state": "OFF"})
    # ...and the relay a stanza she built without them.
    with pytest.raises(grpc.aio.AioRpcError) as relay:
        await _send_raw(world, dora, encode(raw_message(dora.address, ben.user, [ben.address])))
    assert error_reason(relay.value) == ("SENDER_CONSENT_MISSING", {"consent_state": "OFF"})

    # A chat within her own provider is not a third-party chat.
    await dora.send_content(ana.user, text("hi ana"))
    async with ana.connect() as stream:
        [native] = await _messages(stream, 1)
    assert ana.decrypt(native.stanza).content.text.body == "hi ana"

    # Allowing only another provider is not enough to write to birdy's users.
    await dora.enable_third_party_chats(["gatekeeper"])
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await _send_raw(world, dora, encode(raw_message(dora.address, ben.user, [ben.address], "m2")))
    assert error_reason(other.value) == ("SENDER_CONSENT_MISSING", {"consent_state": "ENABLED"})
    await world.close()
