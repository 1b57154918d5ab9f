"""The incremental ML-KEM-768 the braid needs, as a narrow protocol (libcrux's ``mlkem768::incremental``).

The key is sent in two parts: a 64-byte header (the matrix seed and the key's hash) first, then the
1152-byte encapsulation key vector. The peer encapsulates against the header alone (``encaps1``: ct1 and the
shared secret), and finishes the ciphertext once the key vector arrives (``encaps2``: ct2).
"""

from __future__ import annotations

from typing import Protocol

from parley_crypto import _mlkem768_incremental as mlkem

HEADER_SIZE = mlkem.HEADER_SIZE
ENCAPSULATION_KEY_SIZE = mlkem.ENCAPSULATION_KEY_SIZE
DECAPSULATION_KEY_SIZE = mlkem.DECAPSULATION_KEY_SIZE
CIPHERTEXT1_SIZE = mlkem.CIPHERTEXT1_SIZE
CIPHERTEXT2_SIZE = mlkem.CIPHERTEXT2_SIZE
ENCAPSULATION_STATE_SIZE = mlkem.ENCAPSULATION_STATE_SIZE
KEY_GENERATION_SEED_SIZE = mlkem.KEY_GENERATION_SEED_SIZE
ENCAPSULATION_SEED_SIZE = 32


class IncrementalKem(Protocol):
    """What the braid calls; sizes are the constants above, randomness comes in as bytes from the caller."""

    def generate(self, seed: bytes) -> tuple[bytes, bytes, bytes]:
        """A key pair from a 64-byte seed: ``(header, encapsulation key, decapsulation key)``."""
        ...

    def encaps1(self, header: bytes, randomness: bytes) -> tuple[bytes, bytes, bytes]:
        """First half of encapsulation from the header and 32 random bytes: ``(ct1, state, shared secret)``."""
        ...

    def encaps2(self, encapsulation_key: bytes, state: bytes) -> bytes:
        """Second half: ct2 from the key vector and the state ``encaps1`` left."""
        ...

    def decaps(self, decapsulation_key: bytes, ct1: bytes, ct2: bytes) -> bytes:
        """The 32-byte shared secret of ``ct1 || ct2``."""
        ...

    def ek_matches_header(self, encapsulation_key: bytes, header: bytes) -> bool:
        """Whether the key vector is the one the (authenticated) header committed to."""
        ...


class MlKem768Incremental:
    """The braid's KEM: parley_crypto's incremental ML-KEM-768 (libcrux layouts, byte for byte)."""

    def generate(self, seed: bytes) -> tuple[bytes, bytes, bytes]:
        """See :meth:`IncrementalKem.generate`."""
        keys = mlkem.generate(seed)
        return keys.header, keys.encapsulation_key, keys.decapsulation_key

    def encaps1(self, header: bytes, randomness: bytes) -> tuple[bytes, bytes, bytes]:
        """See :meth:`IncrementalKem.encaps1`."""
        return mlkem.encaps1(header, randomness)

    def encaps2(self, encapsulation_key: bytes, state: bytes) -> bytes:
        """See :meth:`IncrementalKem.encaps2`."""
        return mlkem.encaps2(encapsulation_key, state)

    def decaps(self, decapsulation_key: bytes, ct1: bytes, ct2: bytes) -> bytes:
        """See :meth:`IncrementalKem.decaps`."""
        return mlkem.decaps(decapsulation_key, ct1, ct2)

    def ek_matches_header(self, encapsulation_key: bytes, header: bytes) -> bool:
        """See :meth:`IncrementalKem.ek_matches_header`."""
        return mlkem.ek_matches_header(encapsulation_key, header)


ML_KEM_768 = MlKem768Incremental()
