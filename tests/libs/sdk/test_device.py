"""The SDK's device client against real identity and key-directory services, with real Signal sessions."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import Cluster

from parley.content.v1 import content_pb2
from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley_crypto import IdentityKeyPair, InMemoryProtocolStore
from parley_sdk import DeviceClient, NotForThisDeviceError, PreKeyCounts, ProviderBackend
from parley_stanza import Address, Message, PayloadKind, decode, encode


async def _backends(cluster: Cluster) -> tuple[ProviderBackend, ProviderBackend]:
    await cluster.start_identity()
    gatekeeper_keys = await cluster.enlist("gatekeeper")
    birdy_keys = await cluster.enlist("birdy")
    await cluster.start_keydir()
    targets = {"identity_target": cluster.target("identity"), "keydir_target": cluster.target("keydir")}
    return (
        ProviderBackend("gatekeeper", gatekeeper_keys.signing_key, **targets),
        ProviderBackend("birdy", birdy_keys.signing_key, **targets),
    )


def _text(body: str) -> content_pb2.Content:
    return content_pb2.Content(sent_at_ms=1, text=content_pb2.Text(body=body))


def _over_the_wire(message: Message) -> Message:
    decoded = decode(encode(message))
    assert isinstance(decoded, Message)
    return decoded


async def test_multi_device_conversation_decrypts_exactly_once_everywhere(cluster: Cluster) -> None:
    gatekeeper, birdy = await _backends(cluster)
    ana = Address.for_user("gatekeeper", "phone", "+4915123456789")
    ben = Address.for_user("birdy", "username", "ben")
    ana_phone = await DeviceClient.register(gatekeeper, ana, new_user=True)
    ana_laptop = await DeviceClient.register(gatekeeper, ana, new_user=False)
    ben_phone = await DeviceClient.register(birdy, ben, new_user=True)
    ben_tablet = await DeviceClient.register(birdy, ben, new_user=False)
    await ana_phone.enable_third_party_chats(["birdy"])
    await ben_phone.enable_third_party_chats(["gatekeeper"])
    for device in (ana_phone, ana_laptop, ben_phone, ben_tablet):
        assert await device.publish_keys(5) == PreKeyCounts(one_time=5, one_time_pq=5)

    received: dict[Address, list[str]] = {d.address: [] for d in (ana_phone, ana_laptop, ben_phone, ben_tablet)}
    script = [
        (ben_phone, ana, "hello ana", (ana_phone, ana_laptop, ben_tablet)),
        (ana_phone, ben, "hi ben", (ben_phone, ben_tablet, ana_laptop)),
        (ben_tablet, ana, "from my tablet", (ana_phone, ana_laptop, ben_phone)),
        (ana_laptop, ben, "and from my laptop", (ben_phone, ben_tablet, ana_phone)),
        (ben_phone, ana, "ratchet step", (ana_phone, ana_laptop, ben_tablet)),
    ]
    for sender, recipient, body, readers in script:
        message = _over_the_wire(await sender.encrypt(recipient, _text(body)))
        assert {p.device for p in message.payloads} == {r.address for r in readers}
        for reader in readers:
            received[reader.address].append(reader.decrypt(message).content.text.body)
        with pytest.raises(NotForThisDeviceError):
            sender.decrypt(message)

    assert received == {
        ana_phone.address: ["hello ana", "from my tablet", "and from my laptop", "ratchet step"],
        ana_laptop.address: ["hello ana", "hi ben", "from my tablet", "ratchet step"],
        ben_phone.address: ["hi ben", "from my tablet", "and from my laptop"],
        ben_tablet.address: ["hello ana", "hi ben", "and from my laptop", "ratchet step"],
    }
    assert sum(d.decrypted for d in (ana_phone, ana_laptop, ben_phone, ben_tablet)) == 15
    for backend in (gatekeeper, birdy):
        await backend.close()


async def test_first_contact_uses_prekey_messages_then_ratchet_messages(cluster: Cluster) -> None:
    gatekeeper, birdy = await _backends(cluster)
    ana = await DeviceClient.register(gatekeeper, Address.for_user("gatekeeper", "username", "ana"), new_user=True)
    ben = await DeviceClient.register(birdy, Address.for_user("birdy", "username", "ben"), new_user=True)
    await ana.enable_third_party_chats(["birdy"])
    await ben.enable_third_party_chats(["gatekeeper"])
    await ana.publish_keys(1)
    await ben.publish_keys(1)
    first = await ben.encrypt(ana.user, _text("one"))
    assert [p.kind for p in first.payloads] == [PayloadKind.PREKEY]
    assert ana.decrypt(first).prekey_message
    answer = await ana.encrypt(ben.user, _text("two"))
    assert [p.kind for p in answer.payloads] == [PayloadKind.MESSAGE]
    assert ben.decrypt(answer).content.text.body == "two"
    # Ana's only one-time prekey and one-time PQ prekey went to Ben; the refill tops both back up.
    assert await ana.refill_prekeys(target=10) == PreKeyCounts(one_time=10, one_time_pq=10)
    for backend in (gatekeeper, birdy):
        await backend.close()


async def test_encrypting_to_an_unreachable_user_fails_before_any_state_changes(cluster: Cluster) -> None:
    gatekeeper, birdy = await _backends(cluster)
    ana = await DeviceClient.register(gatekeeper, Address.for_user("gatekeeper", "username", "ana"), new_user=True)
    ben = await DeviceClient.register(birdy, Address.for_user("birdy", "username", "ben"), new_user=True)
    await ana.publish_keys(1)  # Ana never opted in
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ben.encrypt(ana.user, _text("hello?"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert isinstance(ben.store, InMemoryProtocolStore)
    assert ben.store.sessions == {}
    count = await gatekeeper.keydir.GetPreKeyCount(
        kd_pb.GetPreKeyCountRequest(), metadata=gatekeeper.credentials(str(ana.user), ana.device_id)
    )
    assert count.one_time_prekey_count == 1
    for backend in (gatekeeper, birdy):
        await backend.close()


async def test_a_device_rebuilt_from_its_store_keeps_its_sessions_and_never_reuses_a_prekey_id(
    cluster: Cluster,
) -> None:
    gatekeeper, birdy = await _backends(cluster)
    stores: list[InMemoryProtocolStore] = []

    def persisted(identity: IdentityKeyPair, registration_id: int) -> InMemoryProtocolStore:
        # Stands for a store backed by the provider's database: it outlives the client object.
        stores.append(InMemoryProtocolStore(identity, registration_id))
        return stores[-1]

    ana = await DeviceClient.register(gatekeeper, Address.for_user("gatekeeper", "username", "ana"), new_user=True)
    ben = await DeviceClient.register(
        birdy, Address.for_user("birdy", "username", "ben"), new_user=True, store_factory=persisted
    )
    assert stores == [ben.store]
    await ana.enable_third_party_chats(["birdy"])
    await ben.enable_third_party_chats(["gatekeeper"])
    await ana.publish_keys(5)
    await ben.publish_keys(5)
    assert ana.decrypt(await ben.encrypt(ana.user, _text("before"))).content.text.body == "before"

    restarted = DeviceClient(birdy, ben.address, stores[0])
    assert restarted.decrypt(await ana.encrypt(ben.user, _text("after"))).content.text.body == "after"
    again = await restarted.encrypt(ana.user, _text("still me"))
    assert [p.kind for p in again.payloads] == [PayloadKind.MESSAGE]  # the session went on: no new first contact
    assert ana.decrypt(again).content.text.body == "still me"
    # Below the low-watermark (10) the refill adds prekeys under fresh ids: none overwrote one the store held.
    assert await restarted.refill_prekeys(target=60) == PreKeyCounts(one_time=60, one_time_pq=60)
    assert len(stores[0].prekeys) == 60
    for backend in (gatekeeper, birdy):
        await backend.close()
