"""The SDK publishes, refills and uses one-time PQ (Kyber) prekeys and a last-resort one, as libsignal devices do.

Real identity, key directory and relay over gRPC on a real redis-server, real Signal sessions (PQXDH + SPQR).
"""

from __future__ import annotations

import asyncio

from support.cluster import Cluster
from support.relay import text

from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley_crypto import InMemoryProtocolStore
from parley_relay.app import RelaySettings, build_relay
from parley_sdk import DeviceClient, PreKeyCounts, ProviderBackend, RelayConnection
from parley_stanza import Address, Message

ONE_TIME = kd_pb.PQ_PRE_KEY_KIND_ONE_TIME
LAST_RESORT = kd_pb.PQ_PRE_KEY_KIND_LAST_RESORT


async def _backends(cluster: Cluster, *, relay: bool) -> dict[str, ProviderBackend]:
    await cluster.start_identity()
    keys = {name: await cluster.enlist(name) for name in ("gatekeeper", "birdy")}
    await cluster.start_keydir()
    if relay:
        await cluster.start("relay", RelaySettings, build_relay, replica="relay-0")
    return {
        name: ProviderBackend(
            name,
            provider_keys.signing_key,
            identity_target=cluster.target("identity"),
            keydir_target=cluster.target("keydir"),
            relay_target=cluster.target("relay") if relay else None,
        )
        for name, provider_keys in keys.items()
    }


async def _receive(device: DeviceClient, connection: RelayConnection, count: int) -> list[tuple[str, bool]]:
    """Decrypts and acknowledges the next ``count`` messages: (text, was a prekey message) for each."""
    read: list[tuple[str, bool]] = []
    while len(read) < count:
        async with asyncio.timeout(10):
            incoming = await connection.receive()
        if isinstance(incoming.stanza, Message):
            decrypted = device.decrypt(incoming.stanza)
            read.append((decrypted.content.text.body, decrypted.prekey_message))
        await connection.ack(incoming.delivery_id)
    return read


def _kyber_ids(device: DeviceClient) -> tuple[set[int], set[int]]:
    """The device's PQ prekey ids in its store: (one-time, last-resort)."""
    assert isinstance(device.store, InMemoryProtocolStore)
    held = set(device.store.kyber_prekeys)
    last_resort = device.store.last_resort_kyber_ids
    return held - last_resort, held & last_resort


async def test_one_time_pq_prekey_used_once_then_the_last_resort_one_through_the_relay(cluster: Cluster) -> None:
    backends = await _backends(cluster, relay=True)
    ana_phone = await DeviceClient.register(
        backends["gatekeeper"], Address.parse("username:ana@gatekeeper"), new_user=True
    )
    ana_laptop = await DeviceClient.register(
        backends["gatekeeper"], Address.parse("username:ana@gatekeeper"), new_user=False
    )
    ben = await DeviceClient.register(backends["birdy"], Address.parse("username:ben@birdy"), new_user=True)
    await ana_phone.enable_third_party_chats(["birdy"])
    await ben.enable_third_party_chats(["gatekeeper"])
    for device in (ana_phone, ana_laptop):
        assert await device.publish_keys(5) == PreKeyCounts(one_time=5, one_time_pq=5)
    # Ben's device has a single one-time PQ prekey: the first session takes it, the next gets the last resort.
    assert await ben.publish_keys(5, one_time_pq_prekeys=1) == PreKeyCounts(one_time=5, one_time_pq=1)
    ben_one_time, (ben_last_resort,) = _kyber_ids(ben)
    assert len(ben_one_time) == 1

    async with ana_phone.connect() as phone, ana_laptop.connect() as laptop, ben.connect() as ben_stream:
        for stream in (phone, laptop, ben_stream):
            await stream.drained.wait()
        await ana_phone.send_content(ben.user, text("from ana's phone"))
        assert await _receive(ben, ben_stream, 1) == [("from ana's phone", True)]
        # Ben's device consumed the one-time PQ prekey on first use, and keeps its last-resort one.
        assert _kyber_ids(ben) == (set(), {ben_last_resort})
        assert await _receive(ana_laptop, laptop, 1) == [("from ana's phone", True)]

        await ana_laptop.send_content(ben.user, text("from ana's laptop"))
        assert await _receive(ben, ben_stream, 1) == [("from ana's laptop", True)]
        assert await _receive(ana_phone, phone, 1) == [("from ana's laptop", False)]
        assert _kyber_ids(ben) == (set(), {ben_last_resort})  # the last resort survives its use

        await ben.send_content(ana_phone.user, text("hi both"))
        assert await _receive(ana_phone, phone, 1) == [("hi both", False)]
        assert await _receive(ana_laptop, laptop, 1) == [("hi both", False)]

    # The phone started sessions with Ben (on his one-time PQ prekey) and with the laptop (on one of its own);
    # the laptop, which already had the phone's session, started only Ben's, on his last-resort key.
    assert ana_phone.sessions_started == {ONE_TIME: 2}
    assert ana_laptop.sessions_started == {LAST_RESORT: 1}
    assert ben.sessions_started == {}
    # Every message counted at the other end, each once.
    assert (ben.decrypted, ana_phone.decrypted, ana_laptop.decrypted) == (2, 2, 2)
    count = await backends["birdy"].keydir.GetPreKeyCount(
        kd_pb.GetPreKeyCountRequest(), metadata=backends["birdy"].credentials(str(ben.user), ben.device_id)
    )
    assert (count.one_time_prekey_count, count.one_time_pq_prekey_count, count.has_pq_prekey) == (3, 0, True)
    for backend in backends.values():
        await backend.close()


async def test_refill_tops_up_each_kind_of_one_time_prekey_on_its_own(cluster: Cluster) -> None:
    backends = await _backends(cluster, relay=False)
    ana = await DeviceClient.register(backends["gatekeeper"], Address.parse("username:ana@gatekeeper"), new_user=True)
    ben = await DeviceClient.register(backends["birdy"], Address.parse("username:ben@birdy"), new_user=True)
    await ben.enable_third_party_chats(["gatekeeper"])
    await ana.publish_keys(20, one_time_pq_prekeys=3)
    await ana.enable_third_party_chats(["birdy"])
    await ben.publish_keys(1)
    assert ana.decrypt(await ben.encrypt(ana.user, text("hello"))).content.text.body == "hello"
    assert ben.sessions_started == {ONE_TIME: 1}

    # Below the low-watermark (10) only the one-time PQ prekeys are: they alone are topped up, under fresh ids.
    assert await ana.refill_prekeys(target=15) == PreKeyCounts(one_time=19, one_time_pq=15)
    one_time, last_resort = _kyber_ids(ana)
    assert (len(one_time), len(last_resort)) == (15, 1)
    # Nothing is below the watermark now: the next refill uploads nothing.
    assert await ana.refill_prekeys(target=50) == PreKeyCounts(one_time=19, one_time_pq=15)
    assert _kyber_ids(ana) == (one_time, last_resort)
    for backend in backends.values():
        await backend.close()


async def test_a_device_without_pq_keys_gets_no_one_time_pq_prekeys_on_refill(cluster: Cluster) -> None:
    backends = await _backends(cluster, relay=False)
    ana = await DeviceClient.register(backends["gatekeeper"], Address.parse("username:ana@gatekeeper"), new_user=True)
    assert await ana.publish_keys(2, post_quantum=False) == PreKeyCounts(one_time=2, one_time_pq=0)
    assert await ana.refill_prekeys(target=12) == PreKeyCounts(one_time=12, one_time_pq=0)
    assert _kyber_ids(ana) == (set(), set())
    for backend in backends.values():
        await backend.close()
