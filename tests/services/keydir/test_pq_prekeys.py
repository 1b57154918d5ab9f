"""One-time PQ (Kyber) prekeys beside the last-resort one, as libsignal devices publish them (issue 11, item 4).

Real identity and key-directory services over gRPC, a real redis-server, real keys from parley_crypto.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.cluster import Cluster, ProviderKeys, error_reason
from support.keys import DeviceKeys
from support.telemetry import sums

from parley.events.v1.events_pb2 import Event
from parley.keydir.v1 import keydir_pb2 as pb
from parley_crypto import IdentityKeyPair, generate_kyber_prekey, verify_signature

BOB = "phone:+4915112345678@gatekeeper"
ALICE = "username:alice@birdy"
KYBER_1024 = 0x08
MLKEM_1024 = 0x0A
ONE_TIME = pb.PQ_PRE_KEY_KIND_ONE_TIME
LAST_RESORT = pb.PQ_PRE_KEY_KIND_LAST_RESORT
PQ_KIND_ATTRIBUTES = ("one_time", "last_resort")
"""The values of the ``kind`` attribute of ``keydir.pq_prekeys.claimed``."""


def _pq_prekeys(
    identity: IdentityKeyPair, first_id: int, count: int, key_type: int = KYBER_1024
) -> list[pb.KemSignedPreKey]:
    """``count`` one-time PQ prekeys with ids from ``first_id``, signed by ``identity``."""
    records = [generate_kyber_prekey(identity, first_id + i, timestamp=0, key_type=key_type) for i in range(count)]
    return [
        pb.KemSignedPreKey(key_id=r.id, public_key=r.key_pair.public_key.serialize(), signature=r.signature)
        for r in records
    ]


async def _setup(cluster: Cluster, **keydir: object) -> tuple[ProviderKeys, ProviderKeys]:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(gatekeeper, BOB, devices=1, allow=["birdy"])
    await cluster.register_user(birdy, ALICE, devices=1, allow=["gatekeeper"])
    await cluster.start_keydir(**keydir)
    return gatekeeper, birdy


async def _counts(cluster: Cluster, gatekeeper: ProviderKeys) -> tuple[int, int, bool]:
    response = await cluster.keydir().GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=gatekeeper.auth(BOB, 1))
    return response.one_time_prekey_count, response.one_time_pq_prekey_count, response.has_pq_prekey


async def _fetch(cluster: Cluster, birdy: ProviderKeys) -> pb.PreKeyBundle:
    response = await cluster.keydir().FetchPreKeyBundles(
        pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1"), metadata=birdy.auth(ALICE, 1)
    )
    return response.bundles[0]


async def _prekeys_low(redis_url: str) -> list[tuple[int, int, int]]:
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{keys}")
    await client.aclose()
    events = [Event.FromString(fields[b"event"]) for _, fields in entries]
    return [
        (e.prekeys_low.remaining, e.prekeys_low.remaining_pq, e.prekeys_low.low_watermark)
        for e in events
        if e.HasField("prekeys_low")
    ]


async def test_one_time_pq_prekeys_go_oldest_first_then_the_last_resort_one(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    device = DeviceKeys()
    # Both KEM types libsignal knows, mixed: each must come back byte for byte as published.
    one_time = [
        *_pq_prekeys(device.identity, 10, 1, KYBER_1024),
        *_pq_prekeys(device.identity, 11, 1, MLKEM_1024),
        *_pq_prekeys(device.identity, 12, 1, KYBER_1024),
    ]
    request = device.publish_request(1)
    request.pq_prekey.CopyFrom(_pq_prekeys(device.identity, 99, 1, MLKEM_1024)[0])
    request.one_time_pq_prekeys.extend(one_time)
    published = await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))
    assert (published.one_time_prekey_count, published.one_time_pq_prekey_count) == (1, 3)
    assert await _counts(cluster, gatekeeper) == (1, 3, True)

    bundles = [await _fetch(cluster, birdy) for _ in range(5)]
    assert [b.pq_prekey_kind for b in bundles] == [ONE_TIME] * 3 + [LAST_RESORT] * 2
    assert [b.pq_prekey for b in bundles[:3]] == one_time
    assert bundles[3].pq_prekey == bundles[4].pq_prekey == request.pq_prekey  # the last resort stays
    assert [b.pq_prekey.public_key[0] for b in bundles] == [KYBER_1024, MLKEM_1024, KYBER_1024, MLKEM_1024, MLKEM_1024]
    for bundle in bundles:
        assert verify_signature(bundle.identity_key, bundle.pq_prekey.public_key, bundle.pq_prekey.signature)
    # The EC one-time prekeys run out on their own schedule.
    assert [b.one_time_prekey_exhausted for b in bundles] == [False, True, True, True, True]
    assert await _counts(cluster, gatekeeper) == (0, 0, True)


async def test_uploads_append_one_time_pq_prekeys_alone(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    device = DeviceKeys()
    await cluster.keydir().PublishKeys(device.publish_request(2), metadata=gatekeeper.auth(BOB, 1))
    assert await _counts(cluster, gatekeeper) == (2, 0, True)
    uploaded = await cluster.keydir().UploadOneTimePreKeys(
        pb.UploadOneTimePreKeysRequest(one_time_pq_prekeys=_pq_prekeys(device.identity, 1, 4)),
        metadata=gatekeeper.auth(BOB, 1),
    )
    assert (uploaded.one_time_prekey_count, uploaded.one_time_pq_prekey_count) == (2, 4)
    bundle = await _fetch(cluster, birdy)
    assert (bundle.pq_prekey_kind, bundle.pq_prekey.key_id, bundle.one_time_prekey.key_id) == (ONE_TIME, 1, 1)
    assert await _counts(cluster, gatekeeper) == (1, 3, True)


def _bad_signature(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys[1].signature = bytes(64)


def _signed_by_another_identity(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys[1].CopyFrom(_pq_prekeys(other, keys[1].key_id, 1)[0])


def _truncated(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys[1].public_key = keys[1].public_key[:-1]


def _unknown_kem_type(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys[1].public_key = b"\x09" + keys[1].public_key[1:]


def _repeated_id(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys[1].key_id = keys[0].key_id


def _id_out_of_range(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys[1].key_id = 0x1000000


def _too_many(keys: list[pb.KemSignedPreKey], other: IdentityKeyPair) -> None:
    keys.extend(keys[0] for _ in range(100))


BAD_BATCHES: list[tuple[Callable[[list[pb.KemSignedPreKey], IdentityKeyPair], None], str]] = [
    (_bad_signature, "BAD_SIGNATURE"),
    (_signed_by_another_identity, "BAD_SIGNATURE"),
    (_truncated, "MALFORMED_KEY"),
    (_unknown_kem_type, "MALFORMED_KEY"),
    (_repeated_id, "INVALID_FIELD"),
    (_id_out_of_range, "INVALID_FIELD"),
    (_too_many, "BATCH_TOO_LARGE"),
]


@pytest.mark.parametrize(("spoil", "reason"), BAD_BATCHES, ids=[spoil.__name__ for spoil, _ in BAD_BATCHES])
async def test_a_bad_one_time_pq_prekey_refuses_the_whole_upload(
    cluster: Cluster, spoil: Callable[[list[pb.KemSignedPreKey], IdentityKeyPair], None], reason: str
) -> None:
    gatekeeper, birdy = await _setup(cluster)
    device = DeviceKeys()
    first = device.publish_request(1)
    first.one_time_pq_prekeys.extend(_pq_prekeys(device.identity, 1, 2))
    await cluster.keydir().PublishKeys(first, metadata=gatekeeper.auth(BOB, 1))

    batch = _pq_prekeys(device.identity, 3, 3)
    spoil(batch, IdentityKeyPair.generate())
    for call in ("UploadOneTimePreKeys", "PublishKeys"):
        keys = device.one_time_prekeys(1)
        request: pb.UploadOneTimePreKeysRequest | pb.PublishKeysRequest = (
            pb.UploadOneTimePreKeysRequest(one_time_prekeys=keys, one_time_pq_prekeys=batch)
            if call == "UploadOneTimePreKeys"
            else pb.PublishKeysRequest(one_time_prekeys=keys, one_time_pq_prekeys=batch)
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await getattr(cluster.keydir(), call)(request, metadata=gatekeeper.auth(BOB, 1))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(error.value) == reason
        # Nothing was appended: not the good PQ keys of the batch, not the EC key beside them.
        assert await _counts(cluster, gatekeeper) == (1, 2, True)
    assert [(await _fetch(cluster, birdy)).pq_prekey.key_id for _ in range(2)] == [1, 2]


async def test_a_first_publication_with_a_bad_one_time_pq_prekey_stores_nothing(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    device = DeviceKeys()
    request = device.publish_request(1)
    request.one_time_pq_prekeys.extend(_pq_prekeys(IdentityKeyPair.generate(), 1, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))
    assert error_reason(error.value) == "BAD_SIGNATURE"
    with pytest.raises(grpc.aio.AioRpcError) as fetch:
        await _fetch(cluster, birdy)
    assert error_reason(fetch.value) == "KEYS_NOT_FOUND"


async def test_stored_one_time_pq_prekeys_are_bounded_on_their_own(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster, max_one_time_pq_prekeys=5)
    device = DeviceKeys()
    request = device.publish_request(10)
    request.one_time_pq_prekeys.extend(_pq_prekeys(device.identity, 1, 4))
    await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().UploadOneTimePreKeys(
            pb.UploadOneTimePreKeysRequest(
                one_time_prekeys=device.one_time_prekeys(1), one_time_pq_prekeys=_pq_prekeys(device.identity, 5, 2)
            ),
            metadata=gatekeeper.auth(BOB, 1),
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "TOO_LARGE"
    assert await _counts(cluster, gatekeeper) == (10, 4, True)


async def test_no_one_time_pq_prekey_is_handed_out_twice_under_concurrency(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(
        cluster, fetch_burst=10_000, drain_guard_claims=10_000, max_one_time_pq_prekeys=1000
    )
    keydir = cluster.keydir()
    device = DeviceKeys()
    await keydir.PublishKeys(device.publish_request(0), metadata=gatekeeper.auth(BOB, 1))
    for first_id in (1, 101, 201):
        await keydir.UploadOneTimePreKeys(
            pb.UploadOneTimePreKeysRequest(
                one_time_prekeys=device.one_time_prekeys(100),
                one_time_pq_prekeys=_pq_prekeys(device.identity, first_id, 100),
            ),
            metadata=gatekeeper.auth(BOB, 1),
        )
    assert await _counts(cluster, gatekeeper) == (300, 300, True)

    bundles = await asyncio.gather(*(_fetch(cluster, birdy) for _ in range(400)))
    one_time = [b for b in bundles if b.pq_prekey_kind == ONE_TIME]
    assert sorted(b.pq_prekey.key_id for b in one_time) == list(range(1, 301))
    assert sum(b.pq_prekey_kind == LAST_RESORT for b in bundles) == 100
    # Both one-time keys of a bundle come from the same atomic claim: the n-th of each list, together.
    assert all(b.one_time_prekey.key_id == b.pq_prekey.key_id for b in one_time)
    assert all(b.one_time_prekey_exhausted for b in bundles if b.pq_prekey_kind == LAST_RESORT)
    assert await _counts(cluster, gatekeeper) == (0, 0, True)


async def test_the_drain_guard_withholds_one_time_pq_prekeys_too(
    cluster: Cluster, metric_reader: InMemoryMetricReader
) -> None:
    gatekeeper, birdy = await _setup(cluster, drain_guard_claims=3, drain_guard_window_s=600)
    device = DeviceKeys()
    request = device.publish_request(10)
    request.one_time_pq_prekeys.extend(_pq_prekeys(device.identity, 1, 10))
    await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))
    before = sums(metric_reader, "keydir.pq_prekeys.claimed")

    bundles = [await _fetch(cluster, birdy) for _ in range(6)]
    assert [b.pq_prekey_kind for b in bundles] == [ONE_TIME] * 3 + [LAST_RESORT] * 3
    assert [b.pq_prekey.key_id for b in bundles[:3]] == [1, 2, 3]
    assert await _counts(cluster, gatekeeper) == (7, 7, True)
    after = sums(metric_reader, "keydir.pq_prekeys.claimed")
    claimed = {kind: after.get((("kind", kind),), 0) - before.get((("kind", kind),), 0) for kind in PQ_KIND_ATTRIBUTES}
    assert claimed == {"one_time": 3, "last_resort": 3}


async def test_prekeys_low_fires_when_either_kind_crosses_the_watermark(cluster: Cluster, redis_url: str) -> None:
    gatekeeper, birdy = await _setup(cluster, low_watermark=2)
    device = DeviceKeys()
    request = device.publish_request(5)
    request.one_time_pq_prekeys.extend(_pq_prekeys(device.identity, 1, 3))
    await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))
    for _ in range(5):
        await _fetch(cluster, birdy)
    # (EC left, PQ left, watermark): PQ crosses to 1, PQ takes its last, EC crosses to 1, EC takes its last.
    assert await _prekeys_low(redis_url) == [(3, 1, 2), (2, 0, 2), (1, 0, 2), (0, 0, 2)]


async def test_a_new_identity_key_drops_the_one_time_pq_prekeys(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    device = DeviceKeys()
    request = device.publish_request(1)
    request.one_time_pq_prekeys.extend(_pq_prekeys(device.identity, 1, 3))
    await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))

    reinstalled = DeviceKeys()
    changed = await cluster.keydir().PublishKeys(
        pb.PublishKeysRequest(
            identity_key=reinstalled.identity.public_key.serialize(), signed_prekey=reinstalled.signed_prekey()
        ),
        metadata=gatekeeper.auth(BOB, 1),
    )
    assert changed.identity_key_changed
    assert changed.one_time_pq_prekey_count == 0
    assert await _counts(cluster, gatekeeper) == (0, 0, False)
    bundle = await _fetch(cluster, birdy)
    assert not bundle.HasField("pq_prekey")
    assert bundle.pq_prekey_kind == pb.PQ_PRE_KEY_KIND_UNSPECIFIED
