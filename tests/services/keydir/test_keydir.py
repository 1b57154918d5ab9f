"""The key directory over real gRPC and Redis, with real Signal-protocol keys and a real identity service."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.cluster import ADMIN, Cluster, ProviderKeys, error_reason
from support.keys import DeviceKeys

from parley.events.v1.events_pb2 import Event
from parley.identity.v1 import identity_pb2 as pb_identity
from parley.keydir.v1 import keydir_pb2 as pb
from parley_crypto import verify_signature

BOB = "phone:+4915112345678@gatekeeper"
ALICE = "username:alice@birdy"


async def _setup(cluster: Cluster, **keydir: object) -> tuple[ProviderKeys, ProviderKeys]:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(gatekeeper, BOB, devices=2, allow=["birdy"])
    await cluster.register_user(birdy, ALICE, devices=1, allow=["gatekeeper"])
    await cluster.start_keydir(**keydir)
    return gatekeeper, birdy


async def _events(redis_url: str) -> list[Event]:
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{keys}")
    await client.aclose()
    return [Event.FromString(fields[b"event"]) for _, fields in entries]


async def _count(cluster: Cluster, keys: ProviderKeys, user: str, device: int) -> int:
    response = await cluster.keydir().GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=keys.auth(user, device))
    return response.one_time_prekey_count


async def test_bundles_are_claimed_oldest_first_and_verify(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    keydir = cluster.keydir()
    bob_devices = [DeviceKeys(registration_id=11), DeviceKeys(registration_id=12)]
    for device_id, device in enumerate(bob_devices, start=1):
        published = await keydir.PublishKeys(device.publish_request(3), metadata=gatekeeper.auth(BOB, device_id))
        assert published.one_time_prekey_count == 3
        assert not published.identity_key_changed

    first = await keydir.FetchPreKeyBundles(pb.FetchPreKeyBundlesRequest(address=BOB), metadata=birdy.auth(ALICE, 1))
    assert [b.device_id for b in first.bundles] == [1, 2]
    for bundle, device in zip(first.bundles, bob_devices, strict=True):
        assert bundle.address == f"{BOB}/{bundle.device_id}"
        assert bundle.registration_id == device.registration_id
        assert bundle.identity_key == device.identity.public_key.serialize()
        assert bundle.one_time_prekey.key_id == 1
        assert not bundle.one_time_prekey_exhausted
        assert verify_signature(bundle.identity_key, bundle.signed_prekey.public_key, bundle.signed_prekey.signature)
        assert verify_signature(bundle.identity_key, bundle.pq_prekey.public_key, bundle.pq_prekey.signature)
        assert len(bundle.pq_prekey.public_key) == 1569
    second = await keydir.FetchPreKeyBundles(
        pb.FetchPreKeyBundlesRequest(address=f"{BOB}/2"), metadata=birdy.auth(ALICE, 1)
    )
    assert [(b.device_id, b.one_time_prekey.key_id) for b in second.bundles] == [(2, 2)]
    assert await _count(cluster, gatekeeper, BOB, 1) == 2
    assert await _count(cluster, gatekeeper, BOB, 2) == 1


async def test_exhausted_devices_fall_back_to_the_signed_prekey(cluster: Cluster, redis_url: str) -> None:
    gatekeeper, birdy = await _setup(cluster, low_watermark=2)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(3), metadata=gatekeeper.auth(BOB, 1))
    claimed = []
    for _ in range(4):
        response = await keydir.FetchPreKeyBundles(
            pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1"), metadata=birdy.auth(ALICE, 1)
        )
        claimed.append(response.bundles[0])
    assert [b.one_time_prekey.key_id for b in claimed[:3]] == [1, 2, 3]
    assert claimed[3].one_time_prekey_exhausted
    assert not claimed[3].HasField("one_time_prekey")
    assert claimed[3].signed_prekey.public_key == claimed[0].signed_prekey.public_key
    assert claimed[3].HasField("pq_prekey")
    low = [e.prekeys_low for e in await _events(redis_url) if e.HasField("prekeys_low")]
    # Once on crossing the watermark (2 -> 1 left), once when the last one went.
    assert [(e.address, e.remaining, e.low_watermark) for e in low] == [(f"{BOB}/1", 1, 2), (f"{BOB}/1", 0, 2)]


@pytest.mark.parametrize(
    ("mutate", "code", "reason"),
    [
        (lambda r, d: r.ClearField("identity_key"), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (lambda r, d: r.ClearField("signed_prekey"), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (lambda r, d: setattr(r, "registration_id", 0), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (lambda r, d: setattr(r, "registration_id", 20000), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (lambda r, d: setattr(r, "identity_key", b"\x05" + b"\x01" * 31), grpc.StatusCode.INVALID_ARGUMENT,
         "MALFORMED_KEY"),
        (lambda r, d: setattr(r.signed_prekey, "signature", bytes(64)), grpc.StatusCode.INVALID_ARGUMENT,
         "BAD_SIGNATURE"),
        (lambda r, d: r.signed_prekey.CopyFrom(DeviceKeys().signed_prekey()), grpc.StatusCode.INVALID_ARGUMENT,
         "BAD_SIGNATURE"),
        (lambda r, d: setattr(r.pq_prekey, "public_key", b"\x08" + bytes(100)), grpc.StatusCode.INVALID_ARGUMENT,
         "MALFORMED_KEY"),
        (lambda r, d: r.pq_prekey.CopyFrom(DeviceKeys().pq_prekey()), grpc.StatusCode.INVALID_ARGUMENT,
         "BAD_SIGNATURE"),
        (lambda r, d: r.one_time_prekeys.extend(d.one_time_prekeys(100)), grpc.StatusCode.INVALID_ARGUMENT,
         "BATCH_TOO_LARGE"),
        (lambda r, d: r.one_time_prekeys.add(key_id=1, public_key=r.one_time_prekeys[1].public_key),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (lambda r, d: setattr(r.one_time_prekeys[0], "public_key", b"\x06" + bytes(32)),
         grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_KEY"),
    ],
)  # fmt: skip
async def test_bad_publications_are_refused_and_change_nothing(
    cluster: Cluster, mutate: object, code: grpc.StatusCode, reason: str
) -> None:
    gatekeeper, birdy = await _setup(cluster)
    device = DeviceKeys()
    request = device.publish_request(3)
    mutate(request, device)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().PublishKeys(request, metadata=gatekeeper.auth(BOB, 1))
    assert error.value.code() == code
    assert error_reason(error.value) == reason
    assert await _count(cluster, gatekeeper, BOB, 1) == 0
    with pytest.raises(grpc.aio.AioRpcError) as fetch:
        await cluster.keydir().FetchPreKeyBundles(
            pb.FetchPreKeyBundlesRequest(address=BOB), metadata=birdy.auth(ALICE, 1)
        )
    assert error_reason(fetch.value) == "KEYS_NOT_FOUND"


async def test_bounds_on_stored_one_time_prekeys(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster, max_one_time_prekeys=5)
    keydir = cluster.keydir()
    device = DeviceKeys()
    await keydir.PublishKeys(device.publish_request(4), metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await keydir.UploadOneTimePreKeys(
            pb.UploadOneTimePreKeysRequest(one_time_prekeys=device.one_time_prekeys(2)),
            metadata=gatekeeper.auth(BOB, 1),
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "TOO_LARGE"
    assert await _count(cluster, gatekeeper, BOB, 1) == 4
    refill = await keydir.UploadOneTimePreKeys(
        pb.UploadOneTimePreKeysRequest(one_time_prekeys=device.one_time_prekeys(1)), metadata=gatekeeper.auth(BOB, 1)
    )
    assert refill.one_time_prekey_count == 5
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await keydir.UploadOneTimePreKeys(pb.UploadOneTimePreKeysRequest(), metadata=gatekeeper.auth(BOB, 1))
    assert error_reason(empty.value) == "MISSING_FIELD"


async def test_unregistered_devices_cannot_publish(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().PublishKeys(DeviceKeys().publish_request(), metadata=gatekeeper.auth(BOB, 9))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error.value) == "DEVICE_NOT_FOUND"


async def test_calls_need_a_device_assertion(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=gatekeeper.auth(BOB))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_signed_prekey_rotation_is_verified(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    keydir = cluster.keydir()
    device = DeviceKeys()
    await keydir.PublishKeys(device.publish_request(1), metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await keydir.RotateSignedPreKey(
            pb.RotateSignedPreKeyRequest(signed_prekey=DeviceKeys().signed_prekey(2)), metadata=gatekeeper.auth(BOB, 1)
        )
    assert error_reason(error.value) == "BAD_SIGNATURE"
    rotated = device.signed_prekey(2)
    await keydir.RotateSignedPreKey(
        pb.RotateSignedPreKeyRequest(signed_prekey=rotated), metadata=gatekeeper.auth(BOB, 1)
    )
    bundle = (
        await keydir.FetchPreKeyBundles(pb.FetchPreKeyBundlesRequest(address=BOB), metadata=birdy.auth(ALICE, 1))
    ).bundles[0]
    assert bundle.signed_prekey == rotated


async def test_identity_key_change_drops_prekeys_and_tells_requesters(cluster: Cluster, redis_url: str) -> None:
    gatekeeper, birdy = await _setup(cluster)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(3), metadata=gatekeeper.auth(BOB, 1))
    await keydir.FetchPreKeyBundles(pb.FetchPreKeyBundlesRequest(address=BOB), metadata=birdy.auth(ALICE, 1))

    reinstalled = DeviceKeys()
    changed = await keydir.PublishKeys(
        pb.PublishKeysRequest(
            identity_key=reinstalled.identity.public_key.serialize(), signed_prekey=reinstalled.signed_prekey()
        ),
        metadata=gatekeeper.auth(BOB, 1),
    )
    assert changed.identity_key_changed
    assert changed.one_time_prekey_count == 0
    bundle = (
        await keydir.FetchPreKeyBundles(pb.FetchPreKeyBundlesRequest(address=BOB), metadata=birdy.auth(ALICE, 1))
    ).bundles[0]
    assert bundle.identity_key == reinstalled.identity.public_key.serialize()
    assert bundle.one_time_prekey_exhausted
    assert not bundle.HasField("pq_prekey")  # the old PQ key was signed by the old identity
    notices = [e.identity_key_changed for e in await _events(redis_url) if e.HasField("identity_key_changed")]
    assert [(n.address, list(n.recent_requesters)) for n in notices] == [(f"{BOB}/1", [ALICE])]


async def test_new_identity_key_needs_a_new_signed_prekey(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(3), metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await keydir.PublishKeys(
            pb.PublishKeysRequest(identity_key=DeviceKeys().identity.public_key.serialize()),
            metadata=gatekeeper.auth(BOB, 1),
        )
    assert error_reason(error.value) == "INVALID_FIELD"
    assert await _count(cluster, gatekeeper, BOB, 1) == 3


async def test_unreachable_users_all_look_the_same(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    lurker = await cluster.enlist("lurker")
    await cluster.register_user(lurker, "username:eve@lurker", allow=["gatekeeper"])
    await cluster.register_user(gatekeeper, "username:shy@gatekeeper")  # never opted in
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(1), metadata=gatekeeper.auth(BOB, 1))
    answers = []
    for asker, who, target in [
        (lurker, "username:eve@lurker", BOB),  # bob does not allow lurker
        (birdy, ALICE, "username:shy@gatekeeper"),
        (birdy, ALICE, "username:ghost@gatekeeper"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await keydir.FetchPreKeyBundles(pb.FetchPreKeyBundlesRequest(address=target), metadata=asker.auth(who, 1))
        answers.append((error.value.code(), error_reason(error.value), error.value.details()))
    assert answers[0][:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert answers[0] == answers[1] == answers[2]
    assert await _count(cluster, gatekeeper, BOB, 1) == 1


async def test_own_bundles_exclude_the_requesting_device(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster)
    keydir = cluster.keydir()
    for device_id in (1, 2):
        await keydir.PublishKeys(DeviceKeys().publish_request(2), metadata=gatekeeper.auth(BOB, device_id))
    response = await keydir.FetchPreKeyBundles(
        pb.FetchPreKeyBundlesRequest(address=BOB), metadata=gatekeeper.auth(BOB, 1)
    )
    assert [b.device_id for b in response.bundles] == [2]


async def test_fetches_are_rate_limited_per_requester(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster, fetch_burst=2, fetch_per_second=0.01)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(5), metadata=gatekeeper.auth(BOB, 1))
    request = pb.FetchPreKeyBundlesRequest(address=BOB)
    for _ in range(2):
        await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(ALICE, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await keydir.FetchPreKeyBundles(request, metadata=birdy.auth(ALICE, 1))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "RATE_LIMITED"
    # The refused fetch claimed nothing.
    assert await _count(cluster, gatekeeper, BOB, 1) == 3


async def test_no_one_time_prekey_is_handed_out_twice_under_concurrency(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster, fetch_burst=10_000, max_one_time_prekeys=1000, drain_guard_claims=10_000)
    keydir = cluster.keydir()
    device = DeviceKeys()
    await keydir.PublishKeys(device.publish_request(100), metadata=gatekeeper.auth(BOB, 1))
    for _ in range(2):
        await keydir.UploadOneTimePreKeys(
            pb.UploadOneTimePreKeysRequest(one_time_prekeys=device.one_time_prekeys(100)),
            metadata=gatekeeper.auth(BOB, 1),
        )
    assert await _count(cluster, gatekeeper, BOB, 1) == 300

    async def fetch() -> pb.PreKeyBundle:
        response = await keydir.FetchPreKeyBundles(
            pb.FetchPreKeyBundlesRequest(address=f"{BOB}/1"), metadata=birdy.auth(ALICE, 1)
        )
        return response.bundles[0]

    bundles = await asyncio.gather(*(fetch() for _ in range(400)))
    handed_out = [b.one_time_prekey.key_id for b in bundles if not b.one_time_prekey_exhausted]
    assert len(handed_out) == 300
    assert sorted(handed_out) == list(range(1, 301))
    assert sum(b.one_time_prekey_exhausted for b in bundles) == 100


async def test_one_trace_spans_keydir_identity_and_redis(cluster: Cluster, spans: InMemorySpanExporter) -> None:
    gatekeeper, birdy = await _setup(cluster)
    await cluster.keydir().PublishKeys(DeviceKeys().publish_request(1), metadata=gatekeeper.auth(BOB, 1))
    spans.clear()
    await cluster.keydir().FetchPreKeyBundles(pb.FetchPreKeyBundlesRequest(address=BOB), metadata=birdy.auth(ALICE, 1))
    finished = spans.get_finished_spans()
    fetch = next(s for s in finished if s.name.endswith("KeyDirectoryService/FetchPreKeyBundles"))
    assert fetch.kind is SpanKind.SERVER
    trace_id = fetch.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    resolve_server = next(
        s for s in in_trace if s.kind is SpanKind.SERVER and s.name.endswith("IdentityService/ResolveRecipient")
    )
    # identity's server span descends from keydir's server span through keydir's client span.
    client = by_id[resolve_server.parent.span_id]
    assert client.kind is SpanKind.CLIENT
    assert by_id[client.parent.span_id] is fetch
    # Redis commands of both services belong to the same trace.
    redis_spans = [s for s in in_trace if (s.attributes or {}).get("db.system") == "redis"]
    parents = {by_id[s.parent.span_id].name for s in redis_spans if s.parent and s.parent.span_id in by_id}
    assert any("ResolveRecipient" in name for name in parents)
    assert any("FetchPreKeyBundles" in name for name in parents)


async def test_kill_switch_reaches_the_key_directory_within_a_second(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    keydir = cluster.keydir()
    await keydir.PublishKeys(DeviceKeys().publish_request(3), metadata=gatekeeper.auth(BOB, 1))
    await cluster.identity().SuspendProvider(pb_identity.SuspendProviderRequest(provider_id="birdy"), metadata=ADMIN)
    deadline = time.monotonic() + 1.0
    refused: grpc.aio.AioRpcError | None = None
    while refused is None and time.monotonic() < deadline:
        try:
            await keydir.GetPreKeyCount(pb.GetPreKeyCountRequest(), metadata=birdy.auth(ALICE, 1))
            await asyncio.sleep(0.01)
        except grpc.aio.AioRpcError as error:
            refused = error
    assert refused is not None, "the key directory still served a suspended provider after one second"
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(refused) == "PROVIDER_SUSPENDED"
    # The other provider is unaffected.
    assert await _count(cluster, gatekeeper, BOB, 1) == 3


@pytest.mark.parametrize(
    ("address", "reason"),
    [("", "MISSING_FIELD"), ("bob", "INVALID_ADDRESS"), ("username:bob@Bad_Provider", "INVALID_ADDRESS")],
)
async def test_fetch_refuses_bad_addresses(cluster: Cluster, address: str, reason: str) -> None:
    gatekeeper, birdy = await _setup(cluster)
    await cluster.keydir().PublishKeys(DeviceKeys().publish_request(1), metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().FetchPreKeyBundles(
            pb.FetchPreKeyBundlesRequest(address=address), metadata=birdy.auth(ALICE, 1)
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason
    assert await _count(cluster, gatekeeper, BOB, 1) == 1


async def test_rotation_without_a_key_is_refused(cluster: Cluster) -> None:
    gatekeeper, _ = await _setup(cluster)
    await cluster.keydir().PublishKeys(DeviceKeys().publish_request(1), metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().RotateSignedPreKey(pb.RotateSignedPreKeyRequest(), metadata=gatekeeper.auth(BOB, 1))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "MISSING_FIELD"


async def test_fetching_a_device_the_user_does_not_have(cluster: Cluster) -> None:
    gatekeeper, birdy = await _setup(cluster)
    await cluster.keydir().PublishKeys(DeviceKeys().publish_request(1), metadata=gatekeeper.auth(BOB, 1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await cluster.keydir().FetchPreKeyBundles(
            pb.FetchPreKeyBundlesRequest(address=f"{BOB}/7"), metadata=birdy.auth(ALICE, 1)
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error.value) == "DEVICE_NOT_FOUND"
    assert await _count(cluster, gatekeeper, BOB, 1) == 1
