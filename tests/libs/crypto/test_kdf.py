"""HKDF known answers (RFC 5869, SHA-256 cases) and the message-key expansion built on it."""

from __future__ import annotations

import pytest

from parley_crypto import hkdf_sha256
from parley_crypto._errors import InvalidMessageError
from parley_crypto._kdf import aes_cbc_decrypt, aes_cbc_encrypt, message_keys


@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "okm"),
    [
        (
            bytes([0x0B] * 22),
            bytes(range(0x00, 0x0D)),
            bytes(range(0xF0, 0xFA)),
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            bytes(range(0x00, 0x50)),
            bytes(range(0x60, 0xB0)),
            bytes(range(0xB0, 0x100)),
            82,
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275"
            "600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        (
            bytes([0x0B] * 22),
            b"",
            b"",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
    ids=["rfc5869-case-1", "rfc5869-case-2", "rfc5869-case-3"],
)
def test_hkdf_rfc5869_vectors(ikm: bytes, salt: bytes, info: bytes, length: int, okm: str) -> None:
    assert hkdf_sha256(ikm, salt, info, length).hex() == okm


def test_missing_salt_is_32_zero_bytes() -> None:
    assert hkdf_sha256(b"ikm", None, b"info", 32) == hkdf_sha256(b"ikm", bytes(32), b"info", 32)


def test_message_keys_are_libsignal_hkdf_split() -> None:
    seed = bytes(range(32))
    derived = hkdf_sha256(seed, None, b"WhisperMessageKeys", 80)
    assert message_keys(seed) == (derived[:32], derived[32:64], derived[64:])


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100])
def test_aes_cbc_round_trip_pads_to_blocks(size: int) -> None:
    key, iv = bytes(32), bytes(16)
    ciphertext = aes_cbc_encrypt(key, iv, bytes(size))
    assert len(ciphertext) == (size // 16 + 1) * 16
    assert aes_cbc_decrypt(key, iv, ciphertext) == bytes(size)


@pytest.mark.parametrize("ciphertext", [b"", bytes(15), bytes(17)])
def test_aes_cbc_rejects_partial_blocks(ciphertext: bytes) -> None:
    with pytest.raises(InvalidMessageError):
        aes_cbc_decrypt(bytes(32), bytes(16), ciphertext)
