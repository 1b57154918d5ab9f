"""HKDF (RFC 5869) with SHA-256, libsignal's chain-key steps and AES-256-CBC.

HMAC goes through :func:`hmac.digest`, OpenSSL's one-shot HMAC, which costs a fraction of building an HMAC
object per call; every message spends seven HMACs on each side, so this is the hot path's largest term.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from parley_crypto._errors import InvalidMessageError

_digest = hmac.digest
HASH_SIZE = 32
_ZERO_SALT = bytes(HASH_SIZE)
_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"
_MESSAGE_KEYS_INFO = b"WhisperMessageKeys"
_ROOT_INFO = b"WhisperRatchet"
_BLOCK = 16


def hkdf_sha256(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 extract-then-expand (RFC 5869); a missing salt is 32 zero bytes.

    Args:
        ikm: input keying material.
        salt: the extract salt, or None.
        info: context for the expand step.
        length: output length in bytes (at most 255 * 32).

    Returns:
        ``length`` bytes of output keying material.
    """
    if length > 255 * HASH_SIZE:
        raise ValueError("HKDF output too long")
    prk = _digest(salt or _ZERO_SALT, ikm, "sha256")
    blocks = []
    block = b""
    counter = 1
    produced = 0
    while produced < length:
        block = _digest(prk, block + info + bytes((counter,)), "sha256")
        blocks.append(block)
        produced += HASH_SIZE
        counter += 1
    return b"".join(blocks)[:length]


def message_keys(seed: bytes) -> tuple[bytes, bytes, bytes]:
    """Expands a message-key seed into ``(cipher_key, mac_key, iv)`` as libsignal's ``MessageKeys`` does.

    HKDF(seed, no salt, "WhisperMessageKeys", 80) unrolled: the hot path calls this twice per message.
    """
    prk = _digest(_ZERO_SALT, seed, "sha256")
    cipher_key = _digest(prk, b"WhisperMessageKeys\x01", "sha256")
    mac_key = _digest(prk, cipher_key + b"WhisperMessageKeys\x02", "sha256")
    iv = _digest(prk, mac_key + b"WhisperMessageKeys\x03", "sha256")[:16]
    return cipher_key, mac_key, iv


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One symmetric ratchet step: ``(message_key_seed, next_chain_key)``."""
    return _digest(chain_key, _MESSAGE_KEY_SEED, "sha256"), _digest(chain_key, _CHAIN_KEY_SEED, "sha256")


def root_step(root_key: bytes, shared_secret: bytes) -> tuple[bytes, bytes]:
    """One DH ratchet step of the root chain: ``(next_root_key, chain_key)`` (HKDF info "WhisperRatchet")."""
    derived = hkdf_sha256(shared_secret, root_key, _ROOT_INFO, 64)
    return derived[:32], derived[32:]


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data``."""
    return _digest(key, data, "sha256")


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding."""
    pad = _BLOCK - len(plaintext) % _BLOCK
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Inverse of :func:`aes_cbc_encrypt`.

    Raises:
        InvalidMessageError: the ciphertext is not whole blocks or its padding is malformed.
    """
    if not ciphertext or len(ciphertext) % _BLOCK:
        raise InvalidMessageError("ciphertext is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= _BLOCK or padded[-pad:] != bytes((pad,)) * pad:
        raise InvalidMessageError("bad PKCS#7 padding")
    return padded[:-pad]
