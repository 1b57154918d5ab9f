"""Kyber1024 as submitted to NIST's third round (v3.0x), the KEM libsignal's ``kem`` module calls Kyber1024.

libsignal serializes its keys and ciphertexts with the type byte ``0x08``; that framing lives in ``_keys.py``.
This module is the bare scheme on the shared module-lattice core (``_lattice.py``), checked against the round-3
reference's known-answer tests. It differs from FIPS 203 ML-KEM-1024 only in its hashing:

- key generation expands the seed d with G(d) (ML-KEM: G(d || k));
- encapsulation hashes its random bytes into the message, m = H(random), derives (K̄, r) = G(m || H(pk)) and
  outputs K = SHAKE256(K̄ || H(c)) (ML-KEM outputs K̄ itself);
- decapsulation's implicit rejection outputs SHAKE256(z || H(c)) (ML-KEM: SHAKE256(z || c)).

Sizes: public key 1568 bytes (t̂ || rho), secret key 3168 (ŝ || pk || H(pk) || z), ciphertext 1568, secret 32.
Both key objects cache what repeated use needs (the decoded vectors and the expanded public matrix with t̂), because
a published prekey is encapsulated to by every peer that fetches it, and a generated key keeps the matrix its
generation sampled for the re-encryption of every decapsulation.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from parley_crypto import _lattice as lattice
from parley_crypto._errors import InvalidKeyError

PARAMS: Final = lattice.Params(k=4, eta1=2, eta2=2, du=11, dv=5)
PUBLIC_KEY_SIZE: Final = PARAMS.public_key_bytes
SECRET_KEY_SIZE: Final = PARAMS.vector_bytes + PARAMS.public_key_bytes + 32 + 32
CIPHERTEXT_SIZE: Final = PARAMS.ciphertext_bytes
SHARED_SECRET_SIZE: Final = 32
KEY_GENERATION_SEED_SIZE: Final = 64


def _sha3_256(data: bytes) -> bytes:
    return hashlib.sha3_256(data).digest()


def _kdf(key: bytes, ciphertext: bytes) -> bytes:
    return hashlib.shake_256(key + _sha3_256(ciphertext)).digest(SHARED_SECRET_SIZE)


class PublicKey:
    """A Kyber1024 public key (1568 bytes: t̂ || rho)."""

    __slots__ = ("_encryption", "_hash", "_t_hat", "raw")

    def __init__(self, raw: bytes) -> None:
        """Parses the raw key.

        Raises:
            InvalidKeyError: wrong length, or a coefficient of t̂ not below q (a key no generator outputs).
        """
        if len(raw) != PUBLIC_KEY_SIZE:
            raise InvalidKeyError(f"Kyber1024 public key must be 1568 bytes, got {len(raw)}")
        t_hat = lattice.decode_vector(raw[: PARAMS.vector_bytes], PARAMS)
        if t_hat is None:
            raise InvalidKeyError("Kyber1024 public key has a coefficient not below q")
        self.raw = bytes(raw)
        self._t_hat = t_hat
        self._hash = _sha3_256(self.raw)
        self._encryption: lattice.Array | None = None

    def _encrypt(self, message: bytes, coins: bytes) -> bytes:
        encryption = self._encryption
        if encryption is None:
            matrix = lattice.sample_matrix(self.raw[PARAMS.vector_bytes :], PARAMS.k)
            encryption = self._encryption = lattice.encryption_matrix(matrix, self._t_hat)
        return lattice.pke_encrypt_with(encryption, message, coins, PARAMS)

    def encapsulate(self, randomness: bytes | None = None) -> tuple[bytes, bytes]:
        """Encapsulates a fresh shared secret to this key.

        Args:
            randomness: 32 bytes standing for the reference's ``randombytes`` output (known-answer tests);
                None draws them from the system's CSPRNG.

        Returns:
            ``(ciphertext, shared_secret)``: 1568 and 32 bytes.

        Raises:
            InvalidKeyError: ``randomness`` is not 32 bytes.
        """
        random = secrets.token_bytes(32) if randomness is None else randomness
        if len(random) != 32:
            raise InvalidKeyError(f"Kyber1024 encapsulation randomness must be 32 bytes, got {len(random)}")
        # Round 3 hashes the system randomness before use, so raw RNG output never reaches the ciphertext.
        message = _sha3_256(random)
        expanded = hashlib.sha3_512(message + self._hash).digest()
        ciphertext = self._encrypt(message, expanded[32:])
        return ciphertext, _kdf(expanded[:32], ciphertext)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class SecretKey:
    """A Kyber1024 secret key (3168 bytes: ŝ || pk || H(pk) || z), with its public key."""

    __slots__ = ("_s_hat", "_z", "public_key", "raw")

    def __init__(self, raw: bytes) -> None:
        """Parses the raw key.

        Raises:
            InvalidKeyError: wrong length, coefficients not below q, or a stored H(pk) that is not pk's hash.
        """
        if len(raw) != SECRET_KEY_SIZE:
            raise InvalidKeyError(f"Kyber1024 secret key must be 3168 bytes, got {len(raw)}")
        vector = PARAMS.vector_bytes
        s_hat = lattice.decode_vector(raw[:vector], PARAMS)
        public_key = PublicKey(raw[vector : vector + PUBLIC_KEY_SIZE])
        if s_hat is None or raw[vector + PUBLIC_KEY_SIZE : -32] != public_key._hash:
            raise InvalidKeyError("malformed Kyber1024 secret key")
        self.raw = bytes(raw)
        self.public_key = public_key
        self._s_hat = s_hat
        self._z = raw[-32:]

    @classmethod
    def generate(cls, seed: bytes | None = None) -> SecretKey:
        """Round-3 key generation.

        Args:
            seed: ``d || z`` (64 bytes): the reference's two ``randombytes`` calls, for known-answer tests;
                None draws it from the system's CSPRNG.

        Raises:
            InvalidKeyError: ``seed`` is not 64 bytes.
        """
        if seed is None:
            seed = secrets.token_bytes(KEY_GENERATION_SEED_SIZE)
        if len(seed) != KEY_GENERATION_SEED_SIZE:
            raise InvalidKeyError(f"Kyber1024 seed must be 64 bytes, got {len(seed)}")
        expanded = hashlib.sha3_512(seed[:32]).digest()
        rho, sigma = expanded[:32], expanded[32:]
        matrix = lattice.sample_matrix(rho, PARAMS.k)
        t_hat, s_hat = lattice.pke_keygen_with_matrix(matrix, sigma, PARAMS)
        public = lattice.byte_encode(t_hat, 12) + rho
        public_key = PublicKey.__new__(PublicKey)
        public_key.raw, public_key._t_hat, public_key._hash = public, t_hat, _sha3_256(public)
        # Kept for decapsulation, whose re-encryption would otherwise sample the same matrix again.
        public_key._encryption = lattice.encryption_matrix(matrix, t_hat)
        # Built from its parts rather than parsed back: every check of __init__ holds by construction.
        key = cls.__new__(cls)
        key.raw = lattice.byte_encode(s_hat, 12) + public + public_key._hash + seed[32:]
        key.public_key, key._s_hat, key._z = public_key, s_hat, seed[32:]
        return key

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Recovers the shared secret; a tampered ciphertext yields the implicit-rejection secret instead.

        Raises:
            InvalidKeyError: the ciphertext is not 1568 bytes.
        """
        if len(ciphertext) != CIPHERTEXT_SIZE:
            raise InvalidKeyError(f"Kyber1024 ciphertext must be 1568 bytes, got {len(ciphertext)}")
        message = lattice.pke_decrypt(self._s_hat, ciphertext, PARAMS)
        expanded = hashlib.sha3_512(message + self.public_key._hash).digest()
        again = self.public_key._encrypt(message, expanded[32:])
        key = expanded[:32] if secrets.compare_digest(again, ciphertext) else self._z
        return _kdf(key, ciphertext)
