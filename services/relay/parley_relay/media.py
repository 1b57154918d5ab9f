"""The media proxy: encrypted attachments uploaded in chunks, checked against their digest, served with resume.

Blobs are end-to-end encrypted by the sender (parley_crypto attachments); the relay checks only size and SHA-256
digest. A media id is a 128-bit random capability: whoever holds a media pointer may download the blob until it
expires. Each provider has a daily upload quota.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime import redis_keys
from parley_runtime.errors import Code, ParleyError, invalid_field, not_found
from parley_runtime.redis_client import Redis

_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Bounds of the media proxy."""

    max_bytes: int = 32 * 1024 * 1024
    max_chunk_bytes: int = 1024 * 1024
    retention_s: int = 30 * _DAY_S
    daily_quota_bytes: int = 10 * 1024 * 1024 * 1024
    download_chunk_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class Uploaded:
    """An accepted upload."""

    media_id: str
    expires_at_ms: int


class MediaHandler:
    """Uploads and downloads of encrypted blobs, in Redis.

    Args:
        client: Redis client.
        limits: bounds.
    """

    def __init__(self, client: Redis, limits: MediaLimits) -> None:
        self._client = client
        self._limits = limits

    async def upload(self, provider_id: str, size: int, sha256: bytes, chunks: AsyncIterator[bytes]) -> Uploaded:
        """Stores a blob of ``size`` bytes whose SHA-256 is ``sha256``.

        Raises:
            ParleyError: INVALID_ARGUMENT (bad header, TOO_LARGE, DIGEST_MISMATCH, size mismatch);
                RESOURCE_EXHAUSTED / QUOTA_EXCEEDED. A failed upload leaves nothing behind.
        """
        limits = self._limits
        if not 0 < size <= limits.max_bytes:
            raise ParleyError(
                Code.INVALID_ARGUMENT,
                ErrorReason.ERROR_REASON_TOO_LARGE,
                f"media size must be 1..{limits.max_bytes} bytes",
                limit=limits.max_bytes,
            )
        if len(sha256) != 32:
            raise invalid_field("sha256", "must be the 32-byte SHA-256 of the blob")
        quota_key = redis_keys.media_quota(provider_id)
        used = int(await self._client.incrby(quota_key, size))
        await self._client.expire(quota_key, _DAY_S, nx=True)
        if used > limits.daily_quota_bytes:
            await self._client.decrby(quota_key, size)
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_QUOTA_EXCEEDED,
                "the provider's daily media quota is used up",
                limit=limits.daily_quota_bytes,
            )
        media_id = secrets.token_hex(16)
        meta, data = redis_keys.media(media_id), redis_keys.media_data(media_id)
        try:
            await self._receive(data, size, sha256, chunks)
        except BaseException:
            await self._client.delete(meta, data)
            await self._client.decrby(quota_key, size)
            raise
        expires_at_ms = int((time.time() + limits.retention_s) * 1000)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"size": size, "sha256": sha256, "provider": provider_id, "complete": 1})
            pipe.pexpireat(meta, expires_at_ms)
            pipe.pexpireat(data, expires_at_ms)
            await pipe.execute()
        return Uploaded(media_id, expires_at_ms)

    async def _receive(self, data_key: str, size: int, sha256: bytes, chunks: AsyncIterator[bytes]) -> None:
        digest = hashlib.sha256()
        received = 0
        async for chunk in chunks:
            if len(chunk) > self._limits.max_chunk_bytes:
                raise invalid_field("chunk", f"chunks are at most {self._limits.max_chunk_bytes} bytes")
            received += len(chunk)
            if received > size:
                raise invalid_field("chunk", f"more bytes than the announced size {size}")
            digest.update(chunk)
            await self._client.append(data_key, chunk)
            # Until complete, an abandoned upload expires on its own within a day.
            await self._client.expire(data_key, _DAY_S, nx=True)
        if received != size:
            raise invalid_field("size", f"announced {size} bytes, received {received}")
        if digest.digest() != sha256:
            raise ParleyError(
                Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_DIGEST_MISMATCH, "the blob does not match its sha256"
            )

    async def download(self, media_id: str, offset: int, length: int) -> AsyncIterator[tuple[int, bytes, int]]:
        """Yields ``(offset, chunk, total size)`` from ``offset`` for ``length`` bytes (0 = to the end).

        Raises:
            ParleyError: NOT_FOUND / MEDIA_NOT_FOUND; INVALID_ARGUMENT for an offset beyond the blob.
        """
        if not media_id:
            raise invalid_field("media_id", "required")
        fields: list[Any] = await self._client.hmget(redis_keys.media(media_id), ["size", "complete"])
        if fields[0] is None or fields[1] != b"1":
            raise not_found(ErrorReason.ERROR_REASON_MEDIA_NOT_FOUND, "no such media, or it expired")
        total = int(fields[0])
        if offset > total:
            raise invalid_field("offset", f"beyond the blob's {total} bytes")
        end = total if length == 0 else min(total, offset + length)
        position = offset
        step = self._limits.download_chunk_bytes
        while position < end:
            chunk: Any = await self._client.getrange(
                redis_keys.media_data(media_id), position, min(end, position + step) - 1
            )
            if not chunk:
                raise not_found(ErrorReason.ERROR_REASON_MEDIA_NOT_FOUND, "the media expired during the download")
            yield position, chunk, total
            position += len(chunk)
