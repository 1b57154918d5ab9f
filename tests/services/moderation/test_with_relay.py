"""Moderation behind the real relay: the relay's franking stamp verifies in moderation, and a block drops silently.

These run the whole path (identity, key directory, relay, moderation, real Signal sessions): a franked message is
encrypted by one provider's device, stamped by the relay, decrypted by the recipient, and reported.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import secrets

from support.cluster import Cluster
from support.moderation import FRANKING_KEY, start_moderation
from support.relay import World, start_world, text

from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_crypto import verify_commitment
from parley_sdk import DeviceClient, Incoming
from parley_stanza import Franking, Message, encode_content


async def _start(cluster: Cluster) -> tuple[moderation_pb2_grpc.ModerationServiceStub, World]:
    # Moderation follows identity, and the relay needs moderation's address: identity first, then moderation,
    # then the relay's world (which adds an identity replica of its own on the same Redis).
    await cluster.start_identity()
    moderation = await start_moderation(cluster)
    world = await start_world(
        cluster, moderation_target=cluster.target("moderation"), franking_key=base64.b64encode(FRANKING_KEY).decode()
    )
    return moderation, world


async def _send_franked(sender: DeviceClient, recipient: DeviceClient, body: str) -> Message:
    """Sends a text whose content carries a fresh franking key, with the commitment outside the ciphertext."""
    content = text(body)
    content.franking_key = secrets.token_bytes(32)
    # The commitment covers the content as the recipient will decrypt it, franking key included (docs/crypto.md).
    commitment = hmac.digest(content.franking_key, encode_content(content), "sha256")
    message = await sender.encrypt(recipient.user, content)
    franked = dataclasses.replace(message, franking=Franking(commitment))
    await sender.send(franked)
    return franked


async def _receive(device: DeviceClient) -> Incoming:
    async with device.connect() as connection:
        async with asyncio.timeout(10):
            while True:
                incoming = await connection.receive()
                await connection.ack(incoming.delivery_id)
                if isinstance(incoming.stanza, Message):
                    return incoming


async def test_a_message_the_relay_stamped_verifies_when_its_recipient_reports_it(cluster: Cluster) -> None:
    moderation, world = await _start(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    sent = await _send_franked(ben, ana, "buy cheap watches")
    incoming = await _receive(ana)
    received = incoming.stanza
    assert isinstance(received, Message)
    assert received.franking is not None
    assert received.franking.stamp is not None
    decrypted = ana.decrypt(received)
    plaintext = encode_content(decrypted.content)
    verify_commitment(plaintext, decrypted.content.franking_key, received.franking.commitment)  # the client's check

    report = pb.ReportMessageRequest(
        message_id=received.id,
        sender=str(received.sender),
        plaintext=plaintext,
        franking_key=decrypted.content.franking_key,
        commitment=received.franking.commitment,
        server_tag=received.franking.stamp,
        server_timestamp_ms=incoming.server_timestamp_ms,
        category="spam",
    )
    credentials = world.backends["gatekeeper"].credentials(str(ana.user), ana.device_id)
    response = await moderation.ReportMessage(report, metadata=credentials)
    assert response.verified
    # Cleo cannot pass Ana's message off as one sent to her.
    cleo = world["cleo_phone"]
    stolen = await moderation.ReportMessage(
        report, metadata=world.backends["birdy"].credentials(str(cleo.user), cleo.device_id)
    )
    assert not stolen.verified
    assert sent.id == received.id
    await world.close()


async def test_a_blocked_senders_message_is_accepted_and_never_delivered(cluster: Cluster) -> None:
    moderation, world = await _start(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    await moderation.Block(
        pb.BlockRequest(address=str(ben.user)), metadata=world.backends["gatekeeper"].credentials(str(ana.user))
    )
    blocked = await ben.send_content(ana.user, text("are you there?"))
    await moderation.Unblock(
        pb.UnblockRequest(address=str(ben.user)), metadata=world.backends["gatekeeper"].credentials(str(ana.user))
    )
    delivered = await ben.send_content(ana.user, text("hello again"))
    # The relay answered both sends alike (an accepted, new message); only the second reached Ana.
    for response in (blocked, delivered):
        assert response.server_timestamp_ms > 0
        assert not response.duplicate
    incoming = await _receive(ana)
    assert isinstance(incoming.stanza, Message)
    assert ana.decrypt(incoming.stanza).content.text.body == "hello again"
    await world.close()
