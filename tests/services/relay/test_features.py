"""The relay refuses the stanza kinds a recipient's provider did not enlist with (receipts, typing, calls, groups):
FAILED_PRECONDITION / FEATURE_UNSUPPORTED naming the feature and the provider, and nothing is stored or forwarded.

Three providers: gatekeeper (every feature), birdy (receipts and typing, no calls or groups) and quiet (text only).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support.cluster import ALL_FEATURES, Cluster
from support.relay import start_providers

from parley.common.v1.common_pb2 import Feature
from parley_sdk import DeviceClient, ProviderBackend, RelayConnection, error_reason
from parley_stanza import (
    Address,
    CallAction,
    CallSignal,
    ChatState,
    ChatStateKind,
    GroupAction,
    GroupControl,
    Message,
    MessageType,
    Payload,
    PayloadKind,
    Receipt,
    ReceiptType,
    Stanza,
    encode,
)

_FEATURES = {
    "gatekeeper": ALL_FEATURES,
    "birdy": [Feature.FEATURE_TEXT, Feature.FEATURE_RECEIPTS, Feature.FEATURE_TYPING],
    "quiet": [Feature.FEATURE_TEXT],
}


async def _devices(cluster: Cluster) -> tuple[dict[str, DeviceClient], list[ProviderBackend]]:
    """Ana (gatekeeper), Ben (birdy) and Quinn (quiet), one device each, all allowing one another."""
    backends = await start_providers(cluster, _FEATURES)
    devices = {}
    for name, provider in (("ana", "gatekeeper"), ("ben", "birdy"), ("quinn", "quiet")):
        device = await DeviceClient.register(backends[provider], Address.parse(f"username:{name}@{provider}"),
                                             new_user=True)  # fmt: skip
        await device.enable_third_party_chats([p for p in _FEATURES if p != provider])
        devices[name] = device
    return devices, list(backends.values())


def _message(sender: DeviceClient, recipient: DeviceClient, message_id: str, *, receipts: bool = False) -> Message:
    """A message with a placeholder ciphertext (the relay never decrypts)."""
    return Message(
        id=message_id,
        sender=sender.address,
        recipient=recipient.user,
        ts=1,
        type=MessageType.CHAT,
        payloads=(Payload.of(recipient.address, PayloadKind.MESSAGE, b"ciphertext"),),
        receipt_requested=receipts,
    )


def _stanzas(sender: DeviceClient, recipient: DeviceClient) -> dict[str, Stanza]:
    """One stanza of each kind the relay checks against the recipient's provider, by the feature it needs."""
    return {
        "FEATURE_RECEIPTS": Receipt(id="r1", sender=sender.address, recipient=recipient.user, ts=1,
                                    type=ReceiptType.READ, message_ids=("m0",)),
        "FEATURE_TYPING": ChatState(id="t1", sender=sender.address, recipient=recipient.user, ts=1,
                                    state=ChatStateKind.TYPING),
        "FEATURE_CALLS": CallSignal(id="c1", sender=sender.address, recipient=recipient.user, ts=1, call_id="call-1",
                                    action=CallAction.OFFER,
                                    payloads=(Payload.of(recipient.address, PayloadKind.MESSAGE, b"offer"),)),
        "FEATURE_GROUPS": GroupControl(id="g1", sender=sender.address, ts=1, group="hikers",
                                       action=GroupAction.CREATE, members=(recipient.user,)),
    }  # fmt: skip


async def _refusal(device: DeviceClient, stanza: Stanza) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await device.send(stanza)
    reason, metadata = error_reason(error.value)
    return error.value.code(), reason, metadata


async def _first_delivery(device: DeviceClient) -> Stanza:
    async with device.connect() as connection:
        async with asyncio.timeout(10):
            incoming = await connection.receive()
        await connection.ack(incoming.delivery_id)
    return incoming.stanza


async def test_each_stanza_kind_a_recipients_provider_lacks_is_refused_with_its_feature(cluster: Cluster) -> None:
    devices, backends = await _devices(cluster)
    ana, ben, quinn = devices["ana"], devices["ben"], devices["quinn"]
    lacking = {"ben": {"FEATURE_CALLS", "FEATURE_GROUPS"}, "quinn": set(_stanzas(ana, quinn))}
    for name, recipient in (("ben", ben), ("quinn", quinn)):
        for feature, stanza in _stanzas(ana, recipient).items():
            if feature in lacking[name]:
                code, reason, metadata = await _refusal(ana, stanza)
                assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FEATURE_UNSUPPORTED"), stanza
                assert metadata == {"feature": feature, "provider": recipient.address.provider}
    # Calls and groups a provider does support are still refused as not relayed yet (the temporary reason).
    for feature in ("FEATURE_CALLS", "FEATURE_GROUPS"):
        code, reason, _ = await _refusal(ana, _stanzas(ana, devices["ana"])[feature])
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    # Receipts and typing pass for Ben's provider; for Quinn's nothing was stored: his first delivery is the
    # message sent after all the refusals.
    await ana.send(_stanzas(ana, ben)["FEATURE_RECEIPTS"])
    await ana.send(_message(ana, quinn, "after-refusals"))
    delivered = await _first_delivery(quinn)
    assert isinstance(delivered, Message)
    assert delivered.id == "after-refusals"
    assert isinstance(await _first_delivery(ben), Receipt)
    for backend in backends:
        await backend.close()


async def test_a_send_batch_gets_the_same_refusal_per_stanza(cluster: Cluster) -> None:
    devices, backends = await _devices(cluster)
    ana, quinn = devices["ana"], devices["quinn"]
    typing = _stanzas(ana, quinn)["FEATURE_TYPING"]
    async with ana.connect() as connection:
        results = await connection.send([encode(typing), encode(_message(ana, quinn, "m1"))])
    refused, accepted = results.results
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION.value[0], "FEATURE_UNSUPPORTED")
    assert dict(refused.metadata) == {"feature": "FEATURE_TYPING", "provider": "quiet"}
    assert accepted.code == 0
    for backend in backends:
        await backend.close()


async def _ack_and_close(device: DeviceClient) -> str:
    """Receives one message, acknowledges it and closes (the relay handles the acknowledgement before closing)."""
    connection: RelayConnection
    async with device.connect() as connection:
        async with asyncio.timeout(10):
            incoming = await connection.receive()
        await connection.ack(incoming.delivery_id)
    assert isinstance(incoming.stanza, Message)
    return incoming.stanza.id


async def test_delivery_receipts_go_only_to_senders_whose_provider_shows_receipts(cluster: Cluster) -> None:
    devices, backends = await _devices(cluster)
    ana, ben, quinn = devices["ana"], devices["ben"], devices["quinn"]
    # Both ask for receipts; Ana acknowledges both. Ben's provider takes receipts, Quinn's does not.
    for sender in (ben, quinn):
        await sender.send(_message(sender, ana, f"from-{sender.user.identifier}", receipts=True))
    assert {await _ack_and_close(ana), await _ack_and_close(ana)} == {"from-ben", "from-quinn"}
    for recipient in (ben, quinn):
        await ana.send(_message(ana, recipient, "later"))
    receipt = await _first_delivery(ben)
    assert isinstance(receipt, Receipt)
    assert receipt.type is ReceiptType.DELIVERY
    assert receipt.message_ids == ("from-ben",)
    later = await _first_delivery(quinn)  # no receipt was stored before it
    assert isinstance(later, Message)
    assert later.id == "later"
    for backend in backends:
        await backend.close()
