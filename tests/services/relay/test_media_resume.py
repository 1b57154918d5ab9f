"""Resumable uploads: an interrupted upload goes on from the bytes stored, offsets are checked, the digest is
checked on the bytes read back, uploads belong to their user, and quotas hold per provider and per user."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster
from support.relay import World, start_world

from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_crypto import decrypt_attachment, encrypt_attachment
from parley_runtime.testing import RedisServer
from parley_sdk import DeviceClient, error_reason

CHUNK = 64 * 1024


def _metadata(device: DeviceClient) -> tuple[tuple[str, str], ...]:
    return device.backend.credentials(str(device.user), device.device_id)


def _stub(cluster: Cluster) -> relay_pb2_grpc.RelayServiceStub:
    return relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))


async def _create(relay: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, blob: bytes, digest: bytes) -> str:
    created = await relay.CreateUpload(
        pb.CreateUploadRequest(size=len(blob), sha256=digest), metadata=_metadata(device)
    )
    status = created.upload
    assert (status.size, status.received, status.complete) == (len(blob), 0, False)
    return str(status.upload_id)


def _parts(upload_id: str, blob: bytes, offset: int) -> list[pb.UploadMediaRequest]:
    header = pb.UploadMediaRequest(header=pb.UploadMediaHeader(upload_id=upload_id, offset=offset))
    return [header] + [pb.UploadMediaRequest(chunk=blob[i : i + CHUNK]) for i in range(offset, len(blob), CHUNK)]


async def _status(relay: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, upload_id: str) -> pb.UploadStatus:
    return (await relay.GetUpload(pb.GetUploadRequest(upload_id=upload_id), metadata=_metadata(device))).upload


async def _interrupted(
    relay: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, upload_id: str, blob: bytes, chunks: int
) -> int:
    """Sends ``chunks`` chunks, then the connection "drops" (the call is cancelled mid-stream); returns the bytes
    the relay kept."""
    hang = asyncio.Event()

    async def requests() -> AsyncIterator[pb.UploadMediaRequest]:
        for part in _parts(upload_id, blob, 0)[: chunks + 1]:
            yield part
        await hang.wait()

    call = relay.UploadMedia(requests(), metadata=_metadata(device))
    async with asyncio.timeout(30):
        while (await _status(relay, device, upload_id)).received < chunks * CHUNK:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    return int((await _status(relay, device, upload_id)).received)


@pytest.fixture
async def world(cluster: Cluster) -> AsyncIterator[World]:
    started = await start_world(cluster, media_user_daily_quota_bytes=3 * 1024 * 1024)
    yield started
    await started.close()


async def test_an_interrupted_upload_resumes_from_the_bytes_stored(cluster: Cluster, world: World) -> None:
    relay = _stub(cluster)
    attachment = encrypt_attachment(os.urandom(900_000))
    blob = attachment.blob
    upload_id = await _create(relay, world["ben"], blob, attachment.digest)
    kept = await _interrupted(relay, world["ben"], upload_id, blob, chunks=5)
    assert kept == 5 * CHUNK
    # Not downloadable before it is complete.
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await _download(relay, world["ana_phone"], upload_id)
    assert error_reason(early.value)[0] == "MEDIA_NOT_FOUND"
    # Any device of the user may go on; the rest is sent from where the relay stands.
    response = await relay.UploadMedia(iter(_parts(upload_id, blob, kept)), metadata=_metadata(world["ben"]))
    assert (response.media_id, response.received) == (upload_id, len(blob))
    downloaded = await _download(relay, world["ana_phone"], response.media_id)
    assert len(decrypt_attachment(downloaded, attachment.media_key, attachment.digest)) == 900_000
    status = await _status(relay, world["ben"], upload_id)
    assert (status.complete, status.received) == (True, len(blob))


async def test_an_upload_may_come_in_several_calls(cluster: Cluster, world: World) -> None:
    relay = _stub(cluster)
    blob = os.urandom(3 * CHUNK + 100)
    upload_id = await _create(relay, world["cleo_phone"], blob, hashlib.sha256(blob).digest())
    parts = _parts(upload_id, blob, 0)
    first = await relay.UploadMedia(iter(parts[:3]), metadata=_metadata(world["cleo_phone"]))
    assert (first.media_id, first.received) == ("", 2 * CHUNK)
    second = await relay.UploadMedia(iter(_parts(upload_id, blob, 2 * CHUNK)), metadata=_metadata(world["cleo_tablet"]))
    assert second.media_id == upload_id
    assert await _download(relay, world["ben"], upload_id) == blob


async def test_a_wrong_offset_is_refused_and_says_where_to_resume(cluster: Cluster, world: World) -> None:
    relay = _stub(cluster)
    blob = os.urandom(4 * CHUNK)
    upload_id = await _create(relay, world["ben"], blob, hashlib.sha256(blob).digest())
    await relay.UploadMedia(iter(_parts(upload_id, blob, 0)[:2]), metadata=_metadata(world["ben"]))
    for offset in (0, 2 * CHUNK):  # behind and ahead of the one stored chunk
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await relay.UploadMedia(iter(_parts(upload_id, blob, offset)), metadata=_metadata(world["ben"]))
        assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(wrong.value) == ("UPLOAD_OFFSET_MISMATCH", {"received": str(CHUNK)})
    assert (await _status(relay, world["ben"], upload_id)).received == CHUNK  # nothing changed


async def test_an_upload_belongs_to_its_user(cluster: Cluster, world: World) -> None:
    relay = _stub(cluster)
    blob = os.urandom(CHUNK)
    upload_id = await _create(relay, world["ben"], blob, hashlib.sha256(blob).digest())
    for stranger in ("cleo_phone", "ana_phone"):  # the same provider's other user, another provider's
        with pytest.raises(grpc.aio.AioRpcError) as status:
            await _status(relay, world[stranger], upload_id)
        assert error_reason(status.value)[0] == "MEDIA_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as upload:
            await relay.UploadMedia(iter(_parts(upload_id, blob, 0)), metadata=_metadata(world[stranger]))
        assert error_reason(upload.value)[0] == "MEDIA_NOT_FOUND"
    assert (await _status(relay, world["ben"], upload_id)).received == 0


async def test_a_resumed_upload_with_wrong_bytes_fails_its_digest_and_is_discarded(
    cluster: Cluster, world: World
) -> None:
    relay = _stub(cluster)
    blob = os.urandom(2 * 1024 * 1024)
    upload_id = await _create(relay, world["ben"], blob, hashlib.sha256(blob).digest())
    await relay.UploadMedia(iter(_parts(upload_id, blob, 0)[:4]), metadata=_metadata(world["ben"]))
    corrupt = blob[: 3 * CHUNK] + bytes(len(blob) - 3 * CHUNK)
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await relay.UploadMedia(iter(_parts(upload_id, corrupt, 3 * CHUNK)), metadata=_metadata(world["ben"]))
    assert error_reason(mismatch.value)[0] == "DIGEST_MISMATCH"
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await _status(relay, world["ben"], upload_id)
    assert error_reason(gone.value)[0] == "MEDIA_NOT_FOUND"
    # Its 2 MiB went back to Ben's quota (3 MiB): another 2 MiB upload fits.
    await _create(relay, world["ben"], blob, hashlib.sha256(blob).digest())


async def test_each_user_has_a_daily_quota_of_their_own(cluster: Cluster, world: World) -> None:
    relay = _stub(cluster)
    blob = os.urandom(2 * 1024 * 1024)
    digest = hashlib.sha256(blob).digest()
    await _create(relay, world["ben"], blob, digest)
    with pytest.raises(grpc.aio.AioRpcError) as quota:
        await _create(relay, world["ben"], blob, digest)  # 4 MiB > Ben's 3 MiB
    assert quota.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(quota.value) == ("QUOTA_EXCEEDED", {"limit": str(3 * 1024 * 1024), "quota": "user"})
    await _create(relay, world["cleo_phone"], blob, digest)  # Cleo, same provider: her own quota


async def test_the_sdk_resumes_an_upload_another_call_left_half_done(cluster: Cluster, world: World) -> None:
    relay = _stub(cluster)
    attachment = encrypt_attachment(os.urandom(500_000))
    upload_id = await _create(relay, world["ben"], attachment.blob, attachment.digest)
    await _interrupted(relay, world["ben"], upload_id, attachment.blob, chunks=3)
    media_id = await world["ben"].resume_media_upload(upload_id, attachment.blob, chunk_size=CHUNK)
    assert media_id == upload_id
    assert await world["ana_laptop"].download_media(media_id) == attachment.blob
    # And a whole upload through the SDK, resumable from the start.
    fresh = encrypt_attachment(os.urandom(300_000))
    assert await world["ana_laptop"].download_media(await world["ben"].upload_media(fresh.blob, fresh.digest)) == (
        fresh.blob
    )


async def test_the_sdk_upload_rides_out_a_redis_stall(cluster: Cluster, redis_server: RedisServer) -> None:
    # The relay's Redis stalls mid-upload: the call fails (UNAVAILABLE after the command deadline) and the SDK goes
    # on from the bytes stored instead of starting over.
    world = await start_world(cluster)
    blob = os.urandom(24 * 1024 * 1024)
    admin = aioredis.Redis.from_url(redis_server.url)
    upload = asyncio.create_task(world["ben"].upload_media(blob, hashlib.sha256(blob).digest(), chunk_size=16 * 1024))
    try:
        async with asyncio.timeout(30):
            while not (stored := [key async for key in admin.scan_iter("media:*:data")]):
                assert not upload.done(), upload.exception()
                await asyncio.sleep(0.005)
        redis_server.pause()
        try:
            await asyncio.sleep(1.5)
        finally:
            redis_server.resume()
        stored_at_pause = await admin.strlen(stored[0])
        async with asyncio.timeout(60):
            media_id = await upload
        assert 0 < stored_at_pause < len(blob)  # the stall came mid-upload
        assert await world["ana_phone"].download_media(media_id) == blob
    finally:
        upload.cancel()
        await admin.aclose()
        await world.close()


async def _download(relay: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, media_id: str) -> bytes:
    call = relay.DownloadMedia(pb.DownloadMediaRequest(media_id=media_id), metadata=_metadata(device))
    return b"".join([part.chunk async for part in call])
