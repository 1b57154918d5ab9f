"""HKDF (RFC 5869) with SHA-256, libsignal's chain-key steps and AES-256-CBC.

Every primitive goes through ``cryptography``: measured on the message path, its HMAC object (1.1 us) beats
the standard library's one-shot ``hmac.digest`` (1.3 us), and its native HKDF (3.1 us) beats HKDF composed of
four HMAC calls in Python (6 us). Each message spends three HMACs and one HKDF on each side.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from parley_crypto._errors import InvalidMessageError

# One hash-algorithm instance for every call: building it anew costs more than a HMAC update.
_SHA256 = hashes.SHA256()
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
    return HKDF(_SHA256, length, salt, info).derive(ikm)


def message_keys(seed: bytes, salt: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """Expands a message-key seed into ``(cipher_key, mac_key, iv)`` as libsignal's ``MessageKeys`` does.

    HKDF(seed, salt, "WhisperMessageKeys", 80); the salt is the message's SPQR key in sessions that run SPQR
    and absent otherwise (and before SPQR's first epoch key).
    """
    derived = HKDF(_SHA256, 80, salt, _MESSAGE_KEYS_INFO).derive(seed)
    return derived[:32], derived[32:64], derived[64:]


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One symmetric ratchet step: ``(message_key_seed, next_chain_key)``."""
    return mac(chain_key, _MESSAGE_KEY_SEED), mac(chain_key, _CHAIN_KEY_SEED)


def root_step(root_key: bytes, shared_secret: bytes) -> tuple[bytes, bytes]:
    """One DH ratchet step of the root chain: ``(next_root_key, chain_key)`` (HKDF info "WhisperRatchet")."""
    derived = hkdf_sha256(shared_secret, root_key, _ROOT_INFO, 64)
    return derived[:32], derived[32:]


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data``."""
    state = HMAC(key, _SHA256)
    state.update(data)
    return state.finalize()


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
