"""The media proxy: chunked upload checked against its digest, download with resume, quotas, refusals."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from support.cluster import Cluster
from support.relay import start_world

from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_crypto import decrypt_attachment, encrypt_attachment
from parley_sdk import DeviceClient, error_reason


def _requests(size: int, sha256: bytes, blob: bytes, chunk: int = 64 * 1024) -> list[pb.UploadMediaRequest]:
    header = pb.UploadMediaRequest(header=pb.UploadMediaHeader(size=size, sha256=sha256))
    return [header] + [pb.UploadMediaRequest(chunk=blob[i : i + chunk]) for i in range(0, len(blob), chunk)]


async def _upload(relay: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, requests: list) -> str:  # type: ignore[type-arg]
    response = await relay.UploadMedia(
        iter(requests), metadata=device.backend.credentials(str(device.user), device.device_id)
    )
    return str(response.media_id)


async def _download(
    relay: relay_pb2_grpc.RelayServiceStub, device: DeviceClient, media_id: str, offset: int = 0
) -> bytes:
    parts = []
    call = relay.DownloadMedia(
        pb.DownloadMediaRequest(media_id=media_id, offset=offset),
        metadata=device.backend.credentials(str(device.user), device.device_id),
    )
    async for part in call:
        parts.append(part.chunk)
    return b"".join(parts)


async def test_an_encrypted_attachment_travels_through_the_proxy(cluster: Cluster) -> None:
    world = await start_world(cluster)
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    attachment = encrypt_attachment(os.urandom(700_000))
    media_id = await _upload(relay, world["ben"], _requests(len(attachment.blob), attachment.digest, attachment.blob))
    blob = await _download(relay, world["ana_phone"], media_id)
    assert blob == attachment.blob
    assert len(decrypt_attachment(blob, attachment.media_key, attachment.digest)) == 700_000
    # Resume from an offset.
    tail = await _download(relay, world["ana_laptop"], media_id, offset=500_000)
    assert tail == attachment.blob[500_000:]
    await world.close()


@pytest.mark.parametrize(
    ("case", "reason"),
    [("digest", "DIGEST_MISMATCH"), ("short", "INVALID_FIELD"), ("long", "INVALID_FIELD"), ("huge", "TOO_LARGE")],
)
async def test_bad_uploads_are_refused_and_leave_nothing(cluster: Cluster, case: str, reason: str) -> None:
    world = await start_world(cluster, max_media_bytes=1024 * 1024)
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    blob = os.urandom(10_000)
    digest = hashlib.sha256(blob).digest()
    requests = {
        "digest": _requests(len(blob), hashlib.sha256(b"other").digest(), blob),
        "short": _requests(len(blob) + 1, digest, blob),
        "long": _requests(len(blob) - 1, digest, blob),
        "huge": _requests(2 * 1024 * 1024, digest, blob),
    }[case]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _upload(relay, world["ben"], requests)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value)[0] == reason
    await world.close()


async def test_unknown_media_and_quota(cluster: Cluster) -> None:
    world = await start_world(cluster, media_daily_quota_bytes=15_000)
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _download(relay, world["ana_phone"], "0" * 32)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(missing.value)[0] == "MEDIA_NOT_FOUND"
    blob = os.urandom(10_000)
    await _upload(relay, world["ben"], _requests(len(blob), hashlib.sha256(blob).digest(), blob))
    with pytest.raises(grpc.aio.AioRpcError) as quota:
        await _upload(relay, world["cleo_phone"], _requests(len(blob), hashlib.sha256(blob).digest(), blob))
    assert quota.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(quota.value)[0] == "QUOTA_EXCEEDED"
    # Another provider has its own quota.
    await _upload(relay, world["ana_phone"], _requests(len(blob), hashlib.sha256(blob).digest(), blob))
    await world.close()
