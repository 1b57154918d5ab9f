"""The media proxy: encrypted attachments uploaded in chunks, resumable, checked against their digest, served with
resume.

Blobs are end-to-end encrypted by the sender (parley_crypto attachments); the relay checks only size and SHA-256
digest. A media id is a 128-bit random capability: whoever holds a media pointer may download the blob until it
expires. Each provider and each user has a daily upload quota, taken when an upload starts.

An upload is one call (``UploadMedia`` with size and digest in its header: a failure leaves nothing behind), or
resumable: ``CreateUpload`` reserves the quota and returns an id; ``UploadMedia`` calls naming it store each chunk
as it arrives, at the offset the upload stands at (``lua/append_media.lua``), so a dropped connection costs only
the chunk in flight; ``GetUpload`` says where to resume. The digest is checked once the last byte is stored: on the
bytes as they streamed when one call carried them all, else by reading the stored blob back.
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
from parley_runtime.redis_client import Redis, load_script

_DAY_S = 86_400
_APPENDED, _OFFSET_MISMATCH, _NO_UPLOAD, _PAST_SIZE = 1, 0, -1, -2
_REREAD_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Bounds of the media proxy."""

    max_bytes: int = 32 * 1024 * 1024
    max_chunk_bytes: int = 1024 * 1024
    retention_s: int = 30 * _DAY_S
    daily_quota_bytes: int = 10 * 1024 * 1024 * 1024
    user_daily_quota_bytes: int = 1024 * 1024 * 1024
    upload_window_s: int = _DAY_S
    download_chunk_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class UploadState:
    """Where an upload stands.

    Attributes:
        upload_id: the upload's id, the blob's media id once complete.
        size: the blob's size.
        received: bytes stored so far.
        complete: every byte stored and the digest checked.
        expires_at_ms: end of the resume window (incomplete) or of the retention (complete), Unix ms.
    """

    upload_id: str
    size: int
    received: int
    complete: bool
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
        self._append = load_script(client, "parley_relay", "append_media")

    async def create(self, provider_id: str, user: str, size: int, sha256: bytes) -> UploadState:
        """Starts a resumable upload of ``size`` bytes whose SHA-256 is ``sha256``, charging both daily quotas.

        Raises:
            ParleyError: INVALID_ARGUMENT (TOO_LARGE, a bad digest); RESOURCE_EXHAUSTED / QUOTA_EXCEEDED (metadata
                ``limit`` and ``quota``: ``provider`` or ``user``). A refused start takes no quota.
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
        await self._charge(provider_id, user, size)
        upload_id = secrets.token_hex(16)
        expires_at_ms = int((time.time() + limits.upload_window_s) * 1000)
        meta = redis_keys.media(upload_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    meta,
                    mapping={"size": size, "sha256": sha256, "provider": provider_id, "user": user, "complete": 0},
                )
                pipe.pexpireat(meta, expires_at_ms)
                await pipe.execute()
        except BaseException:
            await self._refund(provider_id, user, size)
            raise
        return UploadState(upload_id, size, 0, False, expires_at_ms)

    async def status(self, provider_id: str, user: str, upload_id: str) -> UploadState:
        """Where ``user``'s upload ``upload_id`` stands.

        Raises:
            ParleyError: NOT_FOUND / MEDIA_NOT_FOUND when there is no such upload of this user (or it expired).
        """
        if not upload_id:
            raise invalid_field("upload_id", "required")
        meta = redis_keys.media(upload_id)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hmget(meta, ["size", "complete", "provider", "user"])
            pipe.strlen(redis_keys.media_data(upload_id))
            pipe.pexpiretime(meta)
            fields, received, expires_at_ms = await pipe.execute()
        # Someone else's upload is "not found" too: an upload id must not be probed for existence.
        if fields[0] is None or fields[2] != provider_id.encode() or fields[3] != user.encode():
            raise not_found(ErrorReason.ERROR_REASON_MEDIA_NOT_FOUND, "no such upload, or it expired")
        return UploadState(upload_id, int(fields[0]), int(received), fields[1] == b"1", int(expires_at_ms))

    async def upload(
        self,
        provider_id: str,
        user: str,
        *,
        size: int,
        sha256: bytes,
        upload_id: str,
        offset: int,
        chunks: AsyncIterator[bytes],
    ) -> UploadState:
        """Stores chunks of a one-call upload (``upload_id`` empty) or of a resumable one from ``offset``.

        Returns:
            The upload's state after this call: complete, or (a resumable upload whose call ended early) where to
            resume.

        Raises:
            ParleyError: INVALID_ARGUMENT (bad header, TOO_LARGE, DIGEST_MISMATCH, a chunk past the size or too
                big, a one-call upload ending short); FAILED_PRECONDITION / UPLOAD_OFFSET_MISMATCH (metadata
                ``received``); NOT_FOUND / MEDIA_NOT_FOUND; RESOURCE_EXHAUSTED / QUOTA_EXCEEDED. A one-call upload
                that fails leaves nothing behind; a resumable one keeps every chunk stored before the failure.
        """
        if not upload_id:
            state = await self.create(provider_id, user, size, sha256)
            try:
                state = await self._store(state, 0, chunks)
                if not state.complete:
                    raise invalid_field("size", f"announced {size} bytes, received {state.received}")
            except BaseException:
                await self._discard(provider_id, user, state)
                raise
            return state
        state = await self.status(provider_id, user, upload_id)
        if (size and size != state.size) or (sha256 and sha256 != await self._digest_of(upload_id)):
            raise invalid_field("header", "size and sha256 of a resumable upload are those CreateUpload was given")
        if state.complete:
            if offset != state.size:
                raise _offset_mismatch(state.size)
            return state
        return await self._store(state, offset, chunks)

    async def _store(self, state: UploadState, offset: int, chunks: AsyncIterator[bytes]) -> UploadState:
        """Appends chunks from ``offset``; completes the upload when its last byte is stored."""
        meta, data = redis_keys.media(state.upload_id), redis_keys.media_data(state.upload_id)
        # A call that carries the whole blob hashes it as it streams; one that resumes has the hash read back.
        digest = hashlib.sha256() if offset == 0 else None
        received = offset
        async for chunk in chunks:
            if len(chunk) > self._limits.max_chunk_bytes:
                raise invalid_field("chunk", f"chunks are at most {self._limits.max_chunk_bytes} bytes")
            status, stored = (int(value) for value in await self._append(keys=[meta, data], args=[received, chunk]))
            if status == _OFFSET_MISMATCH:
                raise _offset_mismatch(stored)
            if status == _NO_UPLOAD:
                if stored:  # completed by another call meanwhile
                    raise _offset_mismatch(stored)
                raise not_found(ErrorReason.ERROR_REASON_MEDIA_NOT_FOUND, "no such upload, or it expired")
            if status == _PAST_SIZE:
                raise invalid_field("chunk", f"more bytes than the announced size {state.size}")
            received = stored
            if digest is not None:
                digest.update(chunk)
        if received < state.size:
            return UploadState(state.upload_id, state.size, received, False, state.expires_at_ms)
        return await self._complete(state, digest.digest() if digest is not None else None)

    async def _complete(self, state: UploadState, streamed_digest: bytes | None) -> UploadState:
        meta = redis_keys.media(state.upload_id)
        fields: list[Any] = await self._client.hmget(meta, ["sha256", "provider", "user"])
        expected, provider_id, user = fields[0], fields[1].decode(), fields[2].decode()
        actual = streamed_digest if streamed_digest is not None else await self._read_back_digest(state)
        if actual != expected:
            # The bytes are wrong somewhere, and nobody can say where: the upload is discarded, its quota returned.
            await self._discard(provider_id, user, state)
            raise ParleyError(
                Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_DIGEST_MISMATCH, "the blob does not match its sha256"
            )
        expires_at_ms = int((time.time() + self._limits.retention_s) * 1000)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(meta, "complete", 1)
            pipe.pexpireat(meta, expires_at_ms)
            pipe.pexpireat(redis_keys.media_data(state.upload_id), expires_at_ms)
            await pipe.execute()
        return UploadState(state.upload_id, state.size, state.size, True, expires_at_ms)

    async def _read_back_digest(self, state: UploadState) -> bytes:
        digest = hashlib.sha256()
        data = redis_keys.media_data(state.upload_id)
        for start in range(0, state.size, _REREAD_BYTES):
            chunk: Any = await self._client.getrange(data, start, min(state.size, start + _REREAD_BYTES) - 1)
            digest.update(chunk)
        return digest.digest()

    async def _digest_of(self, upload_id: str) -> bytes:
        value: Any = await self._client.hget(redis_keys.media(upload_id), "sha256")
        return bytes(value or b"")

    async def _charge(self, provider_id: str, user: str, size: int) -> None:
        """Takes ``size`` bytes from the provider's and the user's daily quotas, or neither."""
        charged: list[str] = []
        for quota, key, limit in (
            ("provider", redis_keys.media_quota(provider_id), self._limits.daily_quota_bytes),
            ("user", redis_keys.media_user_quota(user), self._limits.user_daily_quota_bytes),
        ):
            used = int(await self._client.incrby(key, size))
            await self._client.expire(key, _DAY_S, nx=True)
            charged.append(key)
            if used > limit:
                for taken in charged:
                    await self._client.decrby(taken, size)
                raise ParleyError(
                    Code.RESOURCE_EXHAUSTED,
                    ErrorReason.ERROR_REASON_QUOTA_EXCEEDED,
                    f"the {quota}'s daily media quota is used up",
                    limit=limit,
                    quota=quota,
                )

    async def _refund(self, provider_id: str, user: str, size: int) -> None:
        await self._client.decrby(redis_keys.media_quota(provider_id), size)
        await self._client.decrby(redis_keys.media_user_quota(user), size)

    async def _discard(self, provider_id: str, user: str, state: UploadState) -> None:
        """Deletes an upload and returns its quota; once only, however many callers discard it."""
        deleted = await self._client.delete(redis_keys.media(state.upload_id))
        await self._client.delete(redis_keys.media_data(state.upload_id))
        if deleted:
            await self._refund(provider_id, user, state.size)

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


def _offset_mismatch(received: int) -> ParleyError:
    return ParleyError(
        Code.FAILED_PRECONDITION,
        ErrorReason.ERROR_REASON_UPLOAD_OFFSET_MISMATCH,
        f"the upload stands at byte {received}; resume from there",
        received=received,
    )
