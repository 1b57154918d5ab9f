"""Incremental ML-KEM-768, as SPQR uses it (libcrux's ``ml_kem::mlkem768::incremental``), byte for byte.

An ML-KEM encapsulation key is ``t̂ (1152 bytes) || rho (32 bytes)``. The first ciphertext half (c1, the
compressed u) needs only the matrix seed rho and, through ML-KEM's Fujisaki-Okamoto variant, the hash H(ek) of
the whole key; the second half (c2, the compressed v) needs t̂. SPQR sends the 64-byte *header* first, so the
peer can compute c1 and the shared secret early, then the 1152-byte *encapsulation key* t̂ in erasure-coded
chunks, and the peer finishes with c2. ``ct1 || ct2`` is an ordinary FIPS 203 ML-KEM-768 ciphertext, and the
decapsulation key is an ordinary 2400-byte FIPS 203 decapsulation key.

Public interface (stable; the SPQR layer in ``_spqr/`` builds on it)::

    HEADER_SIZE = 64                      # rho || H(rho-appended ek)  (libcrux pk1)
    ENCAPSULATION_KEY_SIZE = 1152         # t̂, 12-bit encoded          (libcrux pk2)
    DECAPSULATION_KEY_SIZE = 2400         # dk_pke || ek || H(ek) || z (FIPS 203 / libcrux compressed key)
    CIPHERTEXT1_SIZE = 960                # compressed u, du = 10
    CIPHERTEXT2_SIZE = 128                # compressed v, dv = 4
    ENCAPSULATION_STATE_SIZE = 2080       # r̂ (3 x 256 i16) || e2 (256 i16) || m (32), little-endian
    SHARED_SECRET_SIZE = 32
    KEY_GENERATION_SEED_SIZE = 64         # d || z

    class Keys(header: bytes, encapsulation_key: bytes, decapsulation_key: bytes)
    generate(seed: bytes | None = None) -> Keys
    ek_matches_header(encapsulation_key: bytes, header: bytes) -> bool
    encaps1(header: bytes, randomness: bytes | None = None) -> tuple[bytes, bytes, bytes]   # ct1, state, secret
    encaps2(encapsulation_key: bytes, state: bytes) -> bytes                                # ct2
    decaps(decapsulation_key: bytes, ct1: bytes, ct2: bytes) -> bytes                       # secret

The names follow SPQR's ``incremental_mlkem768.rs`` wrapper (``generate``, ``encaps1``, ``encaps2``, ``decaps``,
``ek_matches_header``). Errors: :class:`InvalidKeyError` for a header, key or ciphertext of the wrong size (and
for an encapsulation key failing FIPS 203's modulus check in :func:`encaps2`), :class:`InvalidStateError` for a
malformed encapsulation state. Decapsulation never fails on a well-sized ciphertext: a tampered one yields
ML-KEM's implicit-rejection secret, which differs from the sender's.

The encapsulation state is what the encapsulating side keeps between the two halves (SPQR stores it in the
session record); its layout is libcrux's ``EncapsState::to_bytes``: the NTT-domain r̂ with centered
representatives in [-1664, 1664], the noise e2 in [-2, 2], each as little-endian i16, then the message m.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Final

import numpy as np

from parley_crypto import _lattice as lattice
from parley_crypto._errors import InvalidKeyError, InvalidStateError

PARAMS: Final = lattice.Params(k=3, eta1=2, eta2=2, du=10, dv=4)
HEADER_SIZE: Final = 64
ENCAPSULATION_KEY_SIZE: Final = PARAMS.vector_bytes
DECAPSULATION_KEY_SIZE: Final = 2 * PARAMS.vector_bytes + 32 + 32 + 32
CIPHERTEXT1_SIZE: Final = PARAMS.c1_bytes
CIPHERTEXT2_SIZE: Final = PARAMS.c2_bytes
_POLY_STATE_BYTES: Final = 2 * lattice.N
ENCAPSULATION_STATE_SIZE: Final = (PARAMS.k + 1) * _POLY_STATE_BYTES + 32
SHARED_SECRET_SIZE: Final = 32
KEY_GENERATION_SEED_SIZE: Final = 64
_HALF_Q: Final = lattice.Q // 2


@dataclass(frozen=True, slots=True)
class Keys:
    """A fresh incremental key pair.

    Attributes:
        header: rho || H(ek), sent first (64 bytes).
        encapsulation_key: t̂, sent in chunks (1152 bytes).
        decapsulation_key: the FIPS 203 decapsulation key, kept private (2400 bytes).
    """

    header: bytes
    encapsulation_key: bytes
    decapsulation_key: bytes


def _sha3_256(data: bytes) -> bytes:
    return hashlib.sha3_256(data).digest()


def generate(seed: bytes | None = None) -> Keys:
    """ML-KEM-768 key generation (FIPS 203 ML-KEM.KeyGen_internal), split into header and key.

    Args:
        seed: ``d || z`` (64 bytes) for a deterministic key pair, the seed form ``cryptography`` and libcrux
            accept; None draws it from the system's CSPRNG.

    Returns:
        The header, encapsulation key and decapsulation key.

    Raises:
        InvalidKeyError: ``seed`` is not 64 bytes.
    """
    if seed is None:
        seed = secrets.token_bytes(KEY_GENERATION_SEED_SIZE)
    if len(seed) != KEY_GENERATION_SEED_SIZE:
        raise InvalidKeyError(f"ML-KEM-768 seed must be 64 bytes, got {len(seed)}")
    d, z = seed[:32], seed[32:]
    # FIPS 203 appends the rank to d (domain separation); round-3 Kyber does not.
    expanded = hashlib.sha3_512(d + bytes((PARAMS.k,))).digest()
    rho, sigma = expanded[:32], expanded[32:]
    t_hat, s_hat = lattice.pke_keygen(rho, sigma, PARAMS)
    t_bytes = lattice.byte_encode(t_hat, 12)
    ek = t_bytes + rho
    ek_hash = _sha3_256(ek)
    return Keys(
        header=rho + ek_hash,
        encapsulation_key=t_bytes,
        decapsulation_key=lattice.byte_encode(s_hat, 12) + ek + ek_hash + z,
    )


def ek_matches_header(encapsulation_key: bytes, header: bytes) -> bool:
    """Whether a reassembled encapsulation key belongs to a header (libcrux ``validate_pk_bytes``).

    Returns:
        True if both have their sizes, every coefficient of t̂ is below q and H(t̂ || rho) is the header's hash.
    """
    if len(encapsulation_key) != ENCAPSULATION_KEY_SIZE or len(header) != HEADER_SIZE:
        return False
    if lattice.decode_vector(encapsulation_key, PARAMS) is None:
        return False
    return secrets.compare_digest(_sha3_256(encapsulation_key + header[:32]), header[32:])


def _state_bytes(r_hat: lattice.Array, e2: lattice.Array, message: bytes) -> bytes:
    centered = np.where(r_hat > _HALF_Q, r_hat - lattice.Q, r_hat)
    polys = np.concatenate((centered, e2[np.newaxis, :]))
    return polys.astype("<i2").tobytes() + message


def encaps1(header: bytes, randomness: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """The first encapsulation half: c1 and the shared secret, from the header alone.

    Args:
        header: the peer's 64-byte header (rho || H(ek)).
        randomness: the 32-byte message m for a deterministic result; None draws it from the CSPRNG.

    Returns:
        ``(ct1, state, shared_secret)``: the 960-byte c1, the 2080-byte state for :func:`encaps2`, and the
        32-byte shared secret the peer will decapsulate.

    Raises:
        InvalidKeyError: the header is not 64 bytes or ``randomness`` not 32.
    """
    if len(header) != HEADER_SIZE:
        raise InvalidKeyError(f"ML-KEM-768 header must be 64 bytes, got {len(header)}")
    message = secrets.token_bytes(32) if randomness is None else randomness
    if len(message) != 32:
        raise InvalidKeyError(f"ML-KEM-768 encapsulation randomness must be 32 bytes, got {len(message)}")
    rho, ek_hash = header[:32], header[32:]
    expanded = hashlib.sha3_512(message + ek_hash).digest()
    shared_secret, coins = expanded[:32], expanded[32:]
    ct1, r_hat, e2 = lattice.pke_encrypt_c1(lattice.sample_matrix(rho, PARAMS.k), coins, PARAMS)
    return ct1, _state_bytes(r_hat, e2, message), shared_secret


def encaps2(encapsulation_key: bytes, state: bytes) -> bytes:
    """The second encapsulation half: c2, from the reassembled encapsulation key and :func:`encaps1`'s state.

    The caller checks :func:`ek_matches_header` first, as SPQR does; this checks sizes and t̂'s range only.

    Args:
        encapsulation_key: the peer's 1152-byte t̂.
        state: the 2080-byte state :func:`encaps1` returned.

    Returns:
        The 128-byte ct2.

    Raises:
        InvalidKeyError: the key has the wrong size or a coefficient not below q.
        InvalidStateError: the state has the wrong size or values outside their ranges.
    """
    if len(encapsulation_key) != ENCAPSULATION_KEY_SIZE:
        raise InvalidKeyError(f"ML-KEM-768 encapsulation key must be 1152 bytes, got {len(encapsulation_key)}")
    t_hat = lattice.decode_vector(encapsulation_key, PARAMS)
    if t_hat is None:
        raise InvalidKeyError("ML-KEM-768 encapsulation key has a coefficient not below q")
    if len(state) != ENCAPSULATION_STATE_SIZE:
        raise InvalidStateError(f"ML-KEM-768 encapsulation state must be 2080 bytes, got {len(state)}")
    polys = np.frombuffer(state[:-32], dtype="<i2").astype(np.int64).reshape(PARAMS.k + 1, lattice.N)
    r_hat, e2 = polys[: PARAMS.k], polys[PARAMS.k]
    if bool((np.abs(r_hat) > _HALF_Q).any()) or bool((np.abs(e2) > PARAMS.eta2).any()):
        raise InvalidStateError("ML-KEM-768 encapsulation state holds values outside their ranges")
    return lattice.pke_encrypt_c2(t_hat, r_hat % lattice.Q, e2, state[-32:], PARAMS)


def decaps(decapsulation_key: bytes, ct1: bytes, ct2: bytes) -> bytes:
    """ML-KEM-768 decapsulation (FIPS 203 ML-KEM.Decaps_internal) of ``ct1 || ct2``.

    Args:
        decapsulation_key: the 2400-byte key from :func:`generate`.
        ct1: the 960-byte first half.
        ct2: the 128-byte second half.

    Returns:
        The 32-byte shared secret; for a tampered ciphertext, the implicit-rejection secret J(z || c).

    Raises:
        InvalidKeyError: a wrong size, or a decapsulation key whose parts do not fit together.
    """
    if len(decapsulation_key) != DECAPSULATION_KEY_SIZE:
        raise InvalidKeyError(f"ML-KEM-768 decapsulation key must be 2400 bytes, got {len(decapsulation_key)}")
    if len(ct1) != CIPHERTEXT1_SIZE or len(ct2) != CIPHERTEXT2_SIZE:
        raise InvalidKeyError(f"ML-KEM-768 ciphertext halves must be 960 and 128 bytes, got {len(ct1)}, {len(ct2)}")
    vector = PARAMS.vector_bytes
    s_hat = lattice.decode_vector(decapsulation_key[:vector], PARAMS)
    ek = decapsulation_key[vector : vector + PARAMS.public_key_bytes]
    ek_hash = decapsulation_key[vector + PARAMS.public_key_bytes : -32]
    z = decapsulation_key[-32:]
    t_hat = lattice.decode_vector(ek[:vector], PARAMS)
    # FIPS 203's decapsulation-key check: the stored hash must be the hash of the stored key.
    if s_hat is None or t_hat is None or not secrets.compare_digest(_sha3_256(ek), ek_hash):
        raise InvalidKeyError("malformed ML-KEM-768 decapsulation key")
    ciphertext = ct1 + ct2
    message = lattice.pke_decrypt(s_hat, ciphertext, PARAMS)
    expanded = hashlib.sha3_512(message + ek_hash).digest()
    rejection = hashlib.shake_256(z + ciphertext).digest(32)
    again = lattice.pke_encrypt(t_hat, ek[vector:], message, expanded[32:], PARAMS)
    return expanded[:32] if secrets.compare_digest(again, ciphertext) else rejection
