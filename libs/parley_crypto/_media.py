"""Attachment encryption as Signal and WhatsApp do it, streaming, with verification before release.

A random 32-byte media key is expanded by HKDF-SHA256 (info ``"Parley Attachment Keys"``, 80 bytes) into the
IV (16), the AES-256-CBC key (32) and the HMAC-SHA256 key (32). The uploaded blob is
``AES-CBC(plaintext, PKCS#7) || HMAC(mac_key, iv || ciphertext)``; the sender also sends ``SHA-256(blob)``
(the digest) inside the end-to-end encrypted message, so the receiver knows the blob it fetched is the one
that was sent. Decryption checks the digest and the MAC over the whole blob before releasing any plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from parley_crypto._errors import InvalidKeyError, MediaIntegrityError
from parley_crypto._kdf import hkdf_sha256

MEDIA_KEY_SIZE = 32
MAC_SIZE = 32
_INFO = b"Parley Attachment Keys"
_BLOCK = 16


def _expand(media_key: bytes) -> tuple[bytes, bytes, bytes]:
    if len(media_key) != MEDIA_KEY_SIZE:
        raise InvalidKeyError(f"media key must be 32 bytes, got {len(media_key)}")
    derived = hkdf_sha256(media_key, None, _INFO, 80)
    return derived[:16], derived[16:48], derived[48:]


@dataclass(frozen=True, slots=True)
class EncryptedAttachment:
    """An encrypted attachment and what the recipient needs to fetch and open it.

    Attributes:
        blob: what to upload: ciphertext followed by the 32-byte MAC.
        media_key: the 32-byte key to send inside the encrypted message.
        digest: SHA-256 of ``blob``, also sent inside the encrypted message.
        plaintext_size: the plaintext length.
    """

    blob: bytes
    media_key: bytes
    digest: bytes
    plaintext_size: int


class AttachmentEncryptor:
    """Encrypts an attachment chunk by chunk; feed :meth:`update`, then call :meth:`finalize`.

    Args:
        media_key: a 32-byte key; a fresh random one when omitted.

    Raises:
        InvalidKeyError: ``media_key`` is not 32 bytes.
    """

    def __init__(self, media_key: bytes | None = None) -> None:
        self.media_key = media_key if media_key is not None else secrets.token_bytes(MEDIA_KEY_SIZE)
        iv, cipher_key, mac_key = _expand(self.media_key)
        self._encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
        self._mac = hmac.new(mac_key, iv, hashlib.sha256)
        self._digest = hashlib.sha256()
        self._pending = b""
        self._size = 0
        self.digest: bytes | None = None

    def _emit(self, ciphertext: bytes) -> bytes:
        self._mac.update(ciphertext)
        self._digest.update(ciphertext)
        return ciphertext

    def update(self, chunk: bytes) -> bytes:
        """Encrypts a chunk of plaintext; returns the blob bytes ready so far (whole blocks)."""
        self._size += len(chunk)
        return self._emit(self._encryptor.update(chunk))

    def finalize(self) -> bytes:
        """Pads, finishes and appends the MAC; sets :attr:`digest`.

        Returns:
            The last blob bytes.
        """
        pad = _BLOCK - self._size % _BLOCK
        tail = self._emit(self._encryptor.update(bytes((pad,)) * pad) + self._encryptor.finalize())
        tag = self._mac.digest()
        self._digest.update(tag)
        self.digest = self._digest.digest()
        return tail + tag

    @property
    def plaintext_size(self) -> int:
        """Bytes of plaintext fed so far."""
        return self._size


def encrypt_attachment(plaintext: bytes, media_key: bytes | None = None) -> EncryptedAttachment:
    """Encrypts a whole attachment held in memory.

    Args:
        plaintext: the attachment.
        media_key: a 32-byte key; random when omitted.

    Returns:
        The blob to upload, with its key and digest.
    """
    encryptor = AttachmentEncryptor(media_key)
    blob = encryptor.update(plaintext) + encryptor.finalize()
    assert encryptor.digest is not None  # set by finalize
    return EncryptedAttachment(blob, encryptor.media_key, encryptor.digest, len(plaintext))


def _verify(chunks: Iterable[bytes], iv: bytes, mac_key: bytes, digest: bytes) -> None:
    mac = hmac.new(mac_key, iv, hashlib.sha256)
    sha = hashlib.sha256()
    tail = b""
    total = 0
    for chunk in chunks:
        sha.update(chunk)
        total += len(chunk)
        if len(chunk) >= MAC_SIZE:
            # Hold back the last 32 bytes: they may be the MAC.
            mac.update(tail)
            mac.update(memoryview(chunk)[:-MAC_SIZE])
            tail = chunk[-MAC_SIZE:]
        else:
            data = tail + chunk
            mac.update(data[:-MAC_SIZE])
            tail = data[-MAC_SIZE:]
    if total < MAC_SIZE + _BLOCK or (total - MAC_SIZE) % _BLOCK:
        raise MediaIntegrityError("attachment blob has an impossible length")
    if not hmac.compare_digest(sha.digest(), digest):
        raise MediaIntegrityError("attachment digest does not match")
    if not hmac.compare_digest(mac.digest(), tail):
        raise MediaIntegrityError("attachment MAC does not verify")


def decrypt_attachment(blob: bytes, media_key: bytes, digest: bytes) -> bytes:
    """Verifies and decrypts an attachment held in memory.

    Raises:
        MediaIntegrityError: wrong digest, bad MAC, bad length or bad padding.
        InvalidKeyError: ``media_key`` is not 32 bytes.
    """
    iv, cipher_key, mac_key = _expand(media_key)
    # One pass per check over views of the blob: no copy of a large attachment before it verified.
    _verify((blob,), iv, mac_key, digest)
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(memoryview(blob)[:-MAC_SIZE]) + decryptor.finalize()
    return _unpad(padded)


def _unpad(padded: bytes) -> bytes:
    pad = padded[-1] if padded else 0
    if not 1 <= pad <= _BLOCK or padded[-pad:] != bytes((pad,)) * pad:
        raise MediaIntegrityError("bad attachment padding")
    return padded[:-pad]


def decrypt_attachment_stream(
    open_blob: Callable[[], Iterable[bytes]], media_key: bytes, digest: bytes
) -> Iterator[bytes]:
    """Verifies a streamed attachment in a first pass, then decrypts it in a second.

    Nothing is released before the whole blob verified, without holding the blob in memory. The second pass
    re-checks the MAC and raises at its end if the blob changed between passes, so callers should still read
    from storage that does not change under them.

    Args:
        open_blob: returns a fresh iterable over the blob's chunks each time it is called (e.g. reads a file).
        media_key: the 32-byte key from the message.
        digest: the SHA-256 digest from the message.

    Returns:
        An iterator over plaintext chunks.

    Raises:
        MediaIntegrityError: wrong digest, bad MAC or bad length (raised before this returns).
        InvalidKeyError: ``media_key`` is not 32 bytes.
    """
    iv, cipher_key, mac_key = _expand(media_key)
    _verify(open_blob(), iv, mac_key, digest)
    return _decrypt_verified(open_blob(), iv, cipher_key, mac_key)


def _decrypt_verified(chunks: Iterable[bytes], iv: bytes, cipher_key: bytes, mac_key: bytes) -> Iterator[bytes]:
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    mac = hmac.new(mac_key, iv, hashlib.sha256)
    tail = b""
    held = b""
    for chunk in chunks:
        data = tail + chunk
        body, tail = data[:-MAC_SIZE], data[-MAC_SIZE:]
        mac.update(body)
        plaintext = held + decryptor.update(body)
        # Hold back the last block: it carries the padding.
        cut = len(plaintext) - _BLOCK
        if cut > 0:
            yield plaintext[:cut]
            held = plaintext[cut:]
        else:
            held = plaintext
    if not hmac.compare_digest(mac.digest(), tail):
        raise MediaIntegrityError("attachment changed between verification and decryption")
    yield _unpad(held + decryptor.finalize())
