"""Attachments: streaming encryption, and verification of digest and MAC before any plaintext is released."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from parley_crypto import (
    AttachmentEncryptor,
    InvalidKeyError,
    MediaIntegrityError,
    decrypt_attachment,
    decrypt_attachment_stream,
    encrypt_attachment,
)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 100_003])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    attachment = encrypt_attachment(data)
    assert len(attachment.blob) == (size // 16 + 1) * 16 + 32
    assert decrypt_attachment(attachment.blob, attachment.media_key, attachment.digest) == data


def test_streaming_matches_one_shot_with_the_same_key() -> None:
    data = os.urandom(70_001)
    key = os.urandom(32)
    encryptor = AttachmentEncryptor(key)
    blob = b"".join(encryptor.update(data[i : i + 999]) for i in range(0, len(data), 999)) + encryptor.finalize()
    one_shot = encrypt_attachment(data, key)
    assert blob == one_shot.blob
    assert encryptor.digest == one_shot.digest
    chunks = [blob[i : i + 1000] for i in range(0, len(blob), 1000)]
    assert b"".join(decrypt_attachment_stream(lambda: iter(chunks), key, one_shot.digest)) == data


def test_every_flipped_byte_is_caught_before_release() -> None:
    attachment = encrypt_attachment(os.urandom(200))
    for index in range(len(attachment.blob)):
        tampered = bytearray(attachment.blob)
        tampered[index] ^= 0x01
        with pytest.raises(MediaIntegrityError):
            decrypt_attachment(bytes(tampered), attachment.media_key, attachment.digest)


def test_wrong_digest_or_key_is_caught() -> None:
    attachment = encrypt_attachment(b"picture")
    with pytest.raises(MediaIntegrityError):
        decrypt_attachment(attachment.blob, attachment.media_key, bytes(32))
    with pytest.raises(MediaIntegrityError):
        decrypt_attachment(attachment.blob, os.urandom(32), attachment.digest)
    with pytest.raises(InvalidKeyError):
        decrypt_attachment(attachment.blob, b"short", attachment.digest)


@pytest.mark.parametrize("blob", [b"", bytes(32), bytes(47)])
def test_impossible_lengths_are_caught(blob: bytes) -> None:
    with pytest.raises(MediaIntegrityError):
        decrypt_attachment(blob, os.urandom(32), bytes(32))


def test_stream_releases_nothing_when_the_tail_is_corrupt() -> None:
    data = os.urandom(50_000)
    attachment = encrypt_attachment(data)
    corrupt = attachment.blob[:-1] + bytes((attachment.blob[-1] ^ 1,))
    released: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(corrupt), 4096):
            yield corrupt[i : i + 4096]

    with pytest.raises(MediaIntegrityError):
        released.extend(decrypt_attachment_stream(chunks, attachment.media_key, attachment.digest))
    assert released == []


def test_blob_changed_between_passes_is_caught() -> None:
    attachment = encrypt_attachment(os.urandom(10_000))
    reads = [attachment.blob, attachment.blob[:100] + bytes(100) + attachment.blob[200:]]
    plaintext = decrypt_attachment_stream(lambda: [reads.pop(0)], attachment.media_key, attachment.digest)
    with pytest.raises(MediaIntegrityError):
        list(plaintext)
